"""Length-grouped batches: a permutation per epoch, fixed by the seed, with little padding."""

import random

import pytest
import torch

from s2d_align.training.sampler import LengthGroupedSampler, default_megabatch_mult, report_lengths


def padding_share(order, lengths, batch):
    padded = real = 0
    for start in range(0, len(order), batch):
        rows = [lengths[i] for i in order[start : start + batch]]
        padded += max(rows) * len(rows)
        real += sum(rows)
    return 1 - real / padded


def lengths_like_reports(n=800, seed=0):
    rng = random.Random(seed)
    return [max(5, int(rng.lognormvariate(4.0, 0.5))) for _ in range(n)]


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    lengths = lengths_like_reports()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=3)) == first  # same seed, same epoch
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(len(lengths))) and second != first
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=4)) != first


def test_order_is_transformers_group_by_length_with_a_seeded_generator():
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = lengths_like_reports(300)
    sampler = LengthGroupedSampler(lengths, batch_size=4, num_processes=2, seed=5)
    sampler.set_epoch(2)
    generator = torch.Generator()
    generator.manual_seed(5 * 100_003 + 2)
    assert list(sampler) == get_length_grouped_indices(lengths, 8, default_megabatch_mult(300, 8), generator)
    assert sampler.megabatch_mult == 9  # 300 // (4 * 8)


def test_grouping_cuts_padding_and_puts_the_longest_sample_first():
    lengths = lengths_like_reports(4000)
    order = list(LengthGroupedSampler(lengths, batch_size=8, seed=0))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    # report tokens only (no prefix), a wide log-normal spread: 47 % padding shuffled, 3 % grouped
    assert padding_share(shuffled, lengths, 8) == pytest.approx(0.468574, abs=1e-6)
    assert padding_share(order, lengths, 8) == pytest.approx(0.030864, abs=1e-6)
    assert lengths[order[0]] == max(lengths)


def test_report_lengths_count_tokens_as_the_collator_does(tiny_world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_world.models["llm"])
    texts = ["The lungs are clear.", "word " * 50]
    raw = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert report_lengths(tokenizer, texts, 16) == [min(raw[0], 15) + 1, 16]
    assert raw[1] > 15


@pytest.mark.parametrize("samples, batch, mult", [(10, 4, 1), (31, 8, 1), (32, 8, 1), (64, 8, 2), (300, 8, 9), (10**6, 8, 50)])
def test_megabatches_follow_transformers_rule(samples, batch, mult):
    # min(n // (4 * global batch), 50), never below one batch: a quarter of the data per megabatch at most.
    assert default_megabatch_mult(samples, batch) == mult


def test_the_default_seed_is_zero():
    lengths = lengths_like_reports(200)
    assert list(LengthGroupedSampler(lengths, batch_size=4)) == list(LengthGroupedSampler(lengths, batch_size=4, seed=0))
