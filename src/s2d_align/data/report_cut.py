"""Reports longer than the training cap are cut at a sentence boundary, never mid-sentence.

Training appends EOS to every report (the model must learn to stop). A
report truncated to ``data.max_report_tokens`` mid-sentence would teach the
model to stop mid-sentence. So an over-long report keeps its longest run of
whole leading sentences that fits the cap, measured with the LLM's own
tokenizer (which only training has), and EOS follows a full stop. Only a
first sentence longer than the whole cap is cut inside it: no boundary fits.
"""

from __future__ import annotations

import re

from s2d_align.data.report_tokens import count_tokens

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def fit_report(text: str, tokenizer, max_tokens: int) -> tuple[list[int], bool]:
    """Token ids (no EOS) of ``text`` cut to at most ``max_tokens - 1``; and whether it was cut."""
    budget = max_tokens - 1
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) <= budget:
        return ids, False
    sentences = SENTENCE_END.split(text.strip())
    for keep in range(len(sentences) - 1, 0, -1):
        prefix = tokenizer(" ".join(sentences[:keep]), add_special_tokens=False).input_ids
        if len(prefix) <= budget:
            return prefix, True
    return ids[:budget], True


def fitted_lengths(texts, tokenizer, max_tokens: int) -> list[int]:
    """Token counts (no EOS) of ``texts`` as :func:`fit_report` leaves them: one batched count, and the
    sentence-boundary cut only for those over the cap."""
    texts = list(texts)
    counts = count_tokens(tokenizer, texts)
    return [n if n < max_tokens else len(fit_report(t, tokenizer, max_tokens)[0]) for t, n in zip(texts, counts)]


def count_cut_reports(texts, tokenizer, max_tokens: int) -> int:
    """How many of ``texts`` :func:`fit_report` cuts (one batched tokenizer call)."""
    return sum(n > max_tokens - 1 for n in count_tokens(tokenizer, texts))
