"""Length-grouped shuffling: batches of similar report lengths, as HF transformers' ``group_by_length``.

Every LLM sequence is prompt + adapter tokens + instruction + report, and all
but the report have the same length within a stage (paper: Progressive
Anatomical Grounding), so a batch is padded to its longest report. Shuffled
at random, a MIMIC-like length distribution wastes 11-20 % of the LLM's
tokens on padding. This sampler follows ``transformers.trainer_pt_utils.
get_length_grouped_indices``: shuffle, cut into megabatches of
``megabatch_mult`` global batches, sort each megabatch by length (longest
first) and put the longest batch of the epoch first, so a batch that does not
fit in memory fails at step 1 rather than hours in.

The ordering is transformers' own function; what this class adds is where
its randomness comes from: a generator seeded from ``(seed, epoch)`` alone, so
the order of any epoch is a pure function of the recipe and resuming mid-epoch
(``skip_first_batches``) replays it exactly without saving sampler state.
It yields indices; the
DataLoader's batch sampler cuts them into per-device batches and accelerate's
``BatchSamplerShard`` deals whole batches to the ranks in turn, so a
megabatch of ``megabatch_mult * batch_size * num_processes`` indices gives
every rank's step-k batch lengths from the same sorted run.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from s2d_align.data.report_tokens import count_tokens

# transformers' default: at most 50 batches per megabatch, fewer for small datasets.
MAX_MEGABATCH_MULT = 50


def default_megabatch_mult(num_samples: int, global_batch: int) -> int:
    """transformers' choice: ``min(n // (4 * batch), 50)``, at least 1 (a quarter of the data per megabatch at most)."""
    return max(1, min(num_samples // (4 * global_batch), MAX_MEGABATCH_MULT))


class LengthGroupedSampler(Sampler[int]):
    """Indices for one epoch, grouped by ``lengths``; the order depends on ``(seed, epoch)`` only."""

    def __init__(self, lengths: Sequence[int], batch_size: int, num_processes: int = 1, seed: int = 0):
        self.lengths = list(lengths)
        self.global_batch = batch_size * num_processes
        self.megabatch_mult = default_megabatch_mult(len(self.lengths), self.global_batch)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator()
        generator.manual_seed(self.seed * 100_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.global_batch, self.megabatch_mult, generator))


def capped_lengths(counts: Sequence[int], max_report_tokens: int) -> list[int]:
    """Report tokens as the collator makes them from raw token ``counts``: at most ``max_report_tokens - 1``, plus EOS.

    (A cut report ends at a sentence boundary, so it may be shorter than the cap:
    for grouping, the cap is close enough.)
    """
    return [min(n, max_report_tokens - 1) + 1 for n in counts]


def report_lengths(llm_tokenizer, texts: Sequence[str], max_report_tokens: int) -> list[int]:
    """:func:`capped_lengths` of ``texts`` tokenised by the LLM's tokenizer."""
    return capped_lengths(count_tokens(llm_tokenizer, texts), max_report_tokens)
