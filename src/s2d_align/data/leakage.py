"""Leakage guards: checked, not assumed, before a manifest is written.

Three rules (SPEC, "Reference report"; issue item 5):

1. Splits are patient-disjoint: no subject has studies in two splits. A split
   that a user supplies (MIMIC's split CSV, an R2Gen ``annotation.json``) is
   checked too, and ``prepare`` stops with the offending patients named.
2. A training sample's reference report comes from a training study, never
   from a validation or test one, and never from the study itself.
3. Key phrases come from the study's own report only. The builders derive
   them from the annotation filed under the study's own report id (or from
   its own findings), so this holds by construction;
   :func:`annotation_matches_report` lets them also check that the annotated
   text is that report's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Sequence

from s2d_align.data.manifest import Study


class LeakageError(ValueError):
    """A split or a pairing that would let evaluation data into training."""


def check_patient_disjoint(records: Iterable[tuple[str, str, str]], where: str) -> None:
    """``records`` are ``(subject_id, split, record_id)``; raise if a subject is in two splits."""
    splits_of: dict[str, dict[str, str]] = defaultdict(dict)
    for subject, split, record_id in records:
        splits_of[subject].setdefault(split, record_id)
    shared = {subject: found for subject, found in splits_of.items() if len(found) > 1}
    if shared:
        examples = "; ".join(
            f"patient {subject}: " + ", ".join(f"{split} ({record})" for split, record in sorted(found.items()))
            for subject, found in sorted(shared.items())[:5]
        )
        raise LeakageError(
            f"{where}: the split is not patient-disjoint: {len(shared)} patient(s) have studies in more than one "
            f"split, e.g. {examples}. Fix the split so that each patient is in exactly one of train/val/test."
        )


def check_references(studies: Sequence[Study], where: str) -> None:
    """Rule 2: references resolve, are not the study itself, and training references are training studies."""
    split_of = {s.id: s.split for s in studies}
    problems = []
    for study in studies:
        ref = study.reference_id
        if ref is None:
            continue
        if ref == study.id:
            problems.append(f"{study.id} is its own reference")
        elif ref not in split_of:
            problems.append(f"{study.id} names reference {ref!r}, which is not in the manifest")
        elif study.split == "train" and split_of[ref] != "train":
            problems.append(f"training study {study.id} takes its reference from {split_of[ref]} study {ref}")
    if problems:
        raise LeakageError(f"{where}: {len(problems)} bad reference(s): " + "; ".join(problems[:5]))


def check_manifest(studies: Sequence[Study], where: str) -> None:
    """Rules 1 and 2 on a finished manifest."""
    check_patient_disjoint(((s.subject_id, s.split, s.id) for s in studies), where)
    check_references(studies, where)


def annotation_matches_report(annotated_text: str, findings: str, impression: str | None) -> bool:
    """Rule 3's sanity check: does a RadGraph ``text`` describe this report?

    RadGraph tokenises the report its own way and may include the section
    headers, so letters and digits are compared, and it is enough that the
    annotation lies within the report or contains the start of its FINDINGS.
    A mismatch means the RadGraph file's keys do not name this dataset's
    reports; the builders count it rather than trust the phrases blindly.
    """
    letters = _alnum(annotated_text)
    if not letters:
        return False
    return letters in _alnum(f"{findings} {impression or ''}") or _alnum(findings)[:40] in letters


_NOT_ALNUM = re.compile(r"[\W_]+")


def _alnum(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())
