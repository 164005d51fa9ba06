"""RadGraph F1 from RadGraph annotations of the reference and of the prediction.

Definitions (Delbrouck et al., 2022, the ``radgraph`` package's
``F1RadGraph`` reward levels ``simple`` / ``partial`` / ``complete``), per
report, each an F1 between two *sets* built from the entities:

- **RG_E** -- ``(tokens, label)`` of every entity;
- **RG_ER** -- ``(tokens, label)`` of an entity without relations,
  ``(tokens, label, True)`` of one with at least one relation;
- **RG_ER-bar** -- ``(tokens, label)`` of an entity without relations and,
  for an entity with relations, one ``(tokens, label, relation, target
  tokens)`` per relation -- with tokens lower-cased in these relation tuples
  only, exactly as the reference implementation does.

Precision is the share of the prediction's set found in the reference's,
recall the converse; an empty set gives 0, and F1 is 0 when P + R is 0 (so an
empty report scores 0, as ``F1RadGraph`` scores empty reports). The corpus
value is the mean over reports. Labels are compared after mapping
RadGraph-XL names onto the v1 names (:func:`s2d_align.data.radgraph.normalise_label`),
a one-to-one renaming that leaves every score unchanged when both sides use
the same scheme and makes v1 and XL annotations comparable.

The annotations come from files (the RadGraph / RadGraph-XL model run on
reference and prediction elsewhere); RadGraph F1 by model, with RadEval's
RadGraph and ``F1RadGraph`` annotating both sides, is in
:mod:`s2d_align.evaluation.model_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from s2d_align.data.radgraph import Annotation, RadGraphError, parse_annotation

RG_KEYS = ("rg_e", "rg_er", "rg_er_bar")


def _f1(hypothesis: set, reference: set) -> float:
    precision = sum(1 for x in hypothesis if x in reference) / len(hypothesis) if hypothesis else 0.0
    recall = sum(1 for x in reference if x in hypothesis) / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _entity_set(annotation: Annotation) -> set:
    return {(e.tokens, e.label) for e in annotation.entities.values()}


def _relation_exists_set(annotation: Annotation) -> set:
    return {(e.tokens, e.label, True) if e.relations else (e.tokens, e.label) for e in annotation.entities.values()}


def _relation_set(annotation: Annotation, where: str) -> set:
    found: set = set()
    for entity in annotation.entities.values():
        if not entity.relations:
            found.add((entity.tokens, entity.label))
            continue
        for relation, target in entity.relations:
            if target not in annotation.entities:
                raise RadGraphError(f"{where}: entity {entity.id!r} has a {relation!r} relation to "
                                    f"missing entity {target!r}")
            found.add((entity.tokens.lower(), entity.label, relation, annotation.entities[target].tokens.lower()))
    return found


def report_scores(reference: Annotation, prediction: Annotation, where: str = "report") -> tuple[float, float, float]:
    """(RG_E, RG_ER, RG_ER-bar) of one prediction against its reference."""
    return (
        _f1(_entity_set(prediction), _entity_set(reference)),
        _f1(_relation_exists_set(prediction), _relation_exists_set(reference)),
        _f1(_relation_set(prediction, f"{where} (prediction)"), _relation_set(reference, f"{where} (reference)")),
    )


def radgraph_scores(pairs: list[tuple[str, Annotation, Annotation]]) -> dict[str, np.ndarray]:
    """Per-report RG_E / RG_ER / RG_ER-bar for ``(id, reference, prediction)`` triples."""
    rows = [report_scores(ref, pred, f"id {record_id!r}") for record_id, ref, pred in pairs]
    table = np.asarray(rows, dtype=float).reshape(len(rows), 3)
    return {key: table[:, i] for i, key in enumerate(RG_KEYS)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such RadGraph annotation file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RadGraphError(f"{path}: not a UTF-8 JSON file ({err})") from None


def load_paired_annotations(path: Path) -> dict[str, tuple[Annotation, Annotation]]:
    """One JSON file keyed by report id: ``{id: {"reference": annotation, "prediction": annotation}}``."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise RadGraphError(f"{path}: expected a JSON object keyed by report id")
    out = {}
    for record_id, entry in data.items():
        if not isinstance(entry, dict) or "reference" not in entry or "prediction" not in entry:
            raise RadGraphError(f"{path}: id {record_id!r} needs both 'reference' and 'prediction' annotations")
        try:
            out[str(record_id)] = (parse_annotation(entry["reference"]), parse_annotation(entry["prediction"]))
        except RadGraphError as err:
            raise RadGraphError(f"{path}: id {record_id!r}: {err}") from None
    return out


def load_annotation_files(reference: Path, prediction: Path) -> dict[str, tuple[Annotation, Annotation]]:
    """Two RadGraph JSON files keyed by report id, one annotating references, one predictions.

    The files may cover more ids than are evaluated (a reference file for a whole test set, say).
    """
    sides = []
    for path in (reference, prediction):
        data = _read_json(path)
        if not isinstance(data, dict):
            raise RadGraphError(f"{path}: a RadGraph file must be a JSON object keyed by report id")
        parsed = {}
        for record_id, entry in data.items():
            try:
                parsed[str(record_id)] = parse_annotation(entry)
            except RadGraphError as err:
                raise RadGraphError(f"{path}: id {record_id!r}: {err}") from None
        sides.append(parsed)
    ref, pred = sides
    # Ids annotated on one side only are left out here; scoring then names any evaluated id that lacks a pair.
    return {record_id: (ref[record_id], pred[record_id]) for record_id in ref if record_id in pred}
