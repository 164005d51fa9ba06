"""The training dataset's documented behaviour: a random key-phrase subset per epoch, truncated reports."""

import torch
from transformers import AutoTokenizer

from s2d_align.data.dataset import KEY_PHRASE_SEPARATOR, Collator, TrainingDataset
from s2d_align.data.manifest import KeyPhrase, Study, read_manifest


def _dataset(tiny_world, phrases, max_key_phrases):
    first = read_manifest(tiny_world.manifest)[0]
    study = Study(id="k", split="train", subject_id="p", study_id="k", images=first.images, findings="f",
                  key_phrases=tuple(KeyPhrase(p) for p in phrases))
    return TrainingDataset([study], {}, tiny_world.manifest, lambda images: torch.zeros(len(images), 3, 4, 4),
                           max_images=1, max_key_phrases=max_key_phrases, seed=0)


def test_each_epoch_draws_a_random_ordered_subset_of_the_key_phrases(tiny_world):
    phrases = [f"finding {i}" for i in range(6)]
    dataset = _dataset(tiny_world, phrases, max_key_phrases=8)
    drawn = []
    for epoch in range(12):
        dataset.set_epoch(epoch)
        drawn.append(dataset[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR))
    assert all(1 <= len(d) <= 6 and d == [p for p in phrases if p in d] for d in drawn)  # a subset, in order
    assert len({len(d) for d in drawn}) >= 3 and len({tuple(d) for d in drawn}) >= 8  # sizes and members vary
    dataset.set_epoch(3)
    assert dataset[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR) == drawn[3]  # reproducible
    capped = _dataset(tiny_world, phrases, max_key_phrases=2)
    for epoch in range(12):
        capped.set_epoch(epoch)
        assert 1 <= len(capped[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR)) <= 2


def test_reports_are_truncated_to_max_report_tokens_and_end_with_eos(tiny_world):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world.models["llm"])
    collate = Collator(tokenizer, tokenizer, max_report_tokens=5, max_text_tokens=8)
    long = "the heart is normal in size and the lungs are clear without effusion"
    assert len(tokenizer(long, add_special_tokens=False).input_ids) > 5
    ids, mask = collate.reports([long, "clear"])
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == tokenizer(long, add_special_tokens=False).input_ids[:4] + [tokenizer.eos_token_id]
    short = tokenizer("clear", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert mask[1].tolist() == [1] * len(short) + [0] * (5 - len(short))
