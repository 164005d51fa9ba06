"""What a ``prepare`` run kept, fixed and skipped, and why: ``OUT/prepare_report.json``.

A dataset builder walks hundreds of thousands of records; one truncated JPEG
or one report in the wrong encoding must not end the run (CONVENTIONS, habit
11). Every record is therefore either *kept* (possibly with a *fix*, such as a
16-bit image rescaled or a report decoded as Windows-1252) or *skipped* with a
*reason*. This module is the ledger all builders share. A whole input that is
malformed (a CSV without its columns, an empty folder) is not a record: it is
a :class:`PrepareError` raised before any work starts.

Reasons are short stable slugs (``no_findings``, ``missing_report``,
``image_dropped:truncated`` ...) so that runs can be compared; the
``details`` keep the first messages of each reason for a human to read.
``docs/data.md`` lists them all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from s2d_align import atomic

REPORT_NAME = "prepare_report.json"
_DETAILS_PER_REASON = 20


class PrepareError(ValueError):
    """A whole input that cannot be used: names the file or folder and what was expected there."""


class PrepareReport:
    """The kept / fixed / skipped ledger of one ``prepare`` run."""

    def __init__(self, source: str, inputs: dict[str, Any] | None = None):
        self.source = source
        self.inputs = dict(inputs or {})
        self.notes: dict[str, Any] = {}
        self._kept: dict[str, str] = {}
        self._skipped: dict[str, tuple[str, str]] = {}
        self._fixes: dict[str, list[tuple[str, str]]] = defaultdict(list)

    # ------------------------------------------------------------------ recording

    def skip(self, record_id: str, reason: str, detail: str = "") -> None:
        """Record that ``record_id`` is left out; the first reason given for a record is the one that counts."""
        if record_id in self._kept:
            del self._kept[record_id]
        self._skipped.setdefault(record_id, (reason, detail))

    def fix(self, record_id: str, reason: str, detail: str = "") -> None:
        """Record that ``record_id`` needed a repair (counted only if the record is finally kept)."""
        self._fixes[record_id].append((reason, detail))

    def keep(self, record_id: str, split: str) -> None:
        self._kept[record_id] = split

    def keep_all(self, records: Iterable[tuple[str, str]]) -> None:
        for record_id, split in records:
            self.keep(record_id, split)

    # ------------------------------------------------------------------ reading

    @property
    def kept(self) -> int:
        return len(self._kept)

    @property
    def skipped(self) -> int:
        return len(self._skipped)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(reason for reason, _ in self._skipped.values()).items()))

    def fixed_by_reason(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for record_id, fixes in self._fixes.items():
            if record_id in self._kept:
                counts.update({reason for reason, _ in fixes})
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        skipped_ids: dict[str, list[str]] = defaultdict(list)
        details: dict[str, list[str]] = defaultdict(list)
        for record_id, (reason, detail) in sorted(self._skipped.items()):
            skipped_ids[reason].append(record_id)
            if detail and len(details[reason]) < _DETAILS_PER_REASON:
                details[reason].append(f"{record_id}: {detail}")
        fixed_ids: dict[str, list[str]] = defaultdict(list)
        for record_id, fixes in sorted(self._fixes.items()):
            if record_id not in self._kept:
                continue
            for reason in sorted({reason for reason, _ in fixes}):
                fixed_ids[reason].append(record_id)
            for reason, detail in fixes:
                if detail and len(details[reason]) < _DETAILS_PER_REASON:
                    details[reason].append(f"{record_id}: {detail}")
        return {
            "source": self.source,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": self.inputs,
            "kept": self.kept,
            "kept_by_split": dict(sorted(Counter(self._kept.values()).items())),
            "skipped": self.skipped,
            "skipped_by_reason": self.skipped_by_reason(),
            "fixed_by_reason": self.fixed_by_reason(),
            "skipped_ids": dict(sorted(skipped_ids.items())),
            "fixed_ids": dict(sorted(fixed_ids.items())),
            "details": dict(sorted(details.items())),
            "notes": self.notes,
        }

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / REPORT_NAME
        atomic.write_json(path, self.to_json(), default=str)
        return path

    def summary(self) -> str:
        """A few lines for the terminal: kept per split, skipped and fixed per reason."""
        splits = ", ".join(f"{split} {n}" for split, n in sorted(Counter(self._kept.values()).items()))
        lines = [f"{self.source}: kept {self.kept} ({splits or 'none'}), skipped {self.skipped}"]
        lines += [f"  skipped {n:>7}  {reason}" for reason, n in self.skipped_by_reason().items()]
        lines += [f"  fixed   {n:>7}  {reason}" for reason, n in self.fixed_by_reason().items()]
        return "\n".join(lines)
