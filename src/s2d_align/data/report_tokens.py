"""Every training report's token count, counted once per run folder and remembered.

Two start-up steps need the LLM token count of every training report: the
notice of reports cut at ``data.max_report_tokens`` (:mod:`report_cut`)
and the length-grouped sampler (:mod:`training.sampler`). On MIMIC-CXR's
~270k reports one batched pass of a fast tokenizer takes tens of seconds on
a small machine, and every ``train`` call (each resume, each rank) would pay
it again. So the counts are taken in one pass and kept in
``RUN/report_tokens.json``, keyed by a digest of each report's text, under a
fingerprint of the tokenizer: a changed report is counted again, a different
tokenizer discards the file.

No library keeps such a cache (``datasets`` would, but only by turning the
manifest into an Arrow dataset, a dependency we do not otherwise need).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from s2d_align import atomic

CACHE_FILE = "report_tokens.json"
VERSION = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides a tokenizer's counts: its class and its serialised model."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        data = backend.to_str()
    else:  # a slow tokenizer: its vocabulary
        data = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{data}".encode()).hexdigest()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token ids per text, without special tokens (one batched tokenizer call)."""
    texts = list(texts)
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def report_token_counts(tokenizer, texts: Sequence[str], cache: Path | None = None, write: bool = True) -> tuple[list[int], int]:
    """Token counts of ``texts`` (as :func:`count_tokens`) and how many distinct texts were counted now, not remembered.

    With ``cache``, counts stored there under the same tokenizer fingerprint
    are reused and the file is updated (when ``write``; the main process
    writes, the other ranks only read).
    """
    texts = list(texts)
    fingerprint = tokenizer_fingerprint(tokenizer) if cache is not None else None
    known: dict[str, int] = {}
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
        if stored.get("version") == VERSION and stored.get("tokenizer") == fingerprint:
            known = stored.get("counts", {})
    digests = [_digest(t) for t in texts]
    missing = list(dict.fromkeys(d for d in digests if d not in known))
    if missing:
        by_digest = dict(zip(digests, texts))
        known.update(zip(missing, count_tokens(tokenizer, [by_digest[d] for d in missing])))
        if cache is not None and write:
            atomic.write_json(cache, {"version": VERSION, "tokenizer": fingerprint, "counts": known}, indent=None)
    return [known[d] for d in digests], len(missing)
