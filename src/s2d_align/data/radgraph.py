"""RadGraph annotations: reading the JSON, normalising label names, walking relations.

RadGraph JSON is a dict keyed by report id. Each value has ``text`` (tokens
joined by spaces) and ``entities``: ``{id: {tokens, label, start_ix, end_ix,
relations: [[type, target_id], ...]}}``. Test files nest the entities under
``labeler_1`` / ``labeler_2``. RadGraph v1 labels are ``ANAT-DP``, ``OBS-DP``,
``OBS-U``, ``OBS-DA``; RadGraph-XL spells them ``Anatomy::definitely present``,
``Observation::uncertain`` and so on. Everything here works on the v1 names;
:func:`normalise_label` maps the XL names onto them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

V1_LABELS = ("ANAT-DP", "ANAT-DA", "ANAT-U", "OBS-DP", "OBS-U", "OBS-DA")
RELATIONS = ("modify", "located_at", "suggestive_of")

_XL_KIND = {"anatomy": "ANAT", "observation": "OBS"}
_XL_CERTAINTY = {"definitely present": "DP", "definitely absent": "DA", "uncertain": "U"}


class RadGraphError(ValueError):
    """A RadGraph annotation that cannot be read."""


def normalise_label(label: str) -> str:
    """Map a RadGraph v1 or RadGraph-XL label onto the v1 name (``OBS-DP`` ...)."""
    if label in V1_LABELS:
        return label
    kind, sep, certainty = label.partition("::")
    if sep and kind.strip().lower() in _XL_KIND and certainty.strip().lower() in _XL_CERTAINTY:
        return f"{_XL_KIND[kind.strip().lower()]}-{_XL_CERTAINTY[certainty.strip().lower()]}"
    raise RadGraphError(f"unknown RadGraph label {label!r}")


@dataclass(frozen=True)
class Entity:
    id: str
    tokens: str
    label: str  # v1 name
    start_ix: int
    end_ix: int
    relations: tuple[tuple[str, str], ...] = ()

    @property
    def is_observation(self) -> bool:
        return self.label.startswith("OBS")


@dataclass(frozen=True)
class Annotation:
    text: str
    entities: dict[str, Entity]

    def targets(self, entity: Entity, relation: str) -> list[Entity]:
        return [self.entities[t] for r, t in entity.relations if r == relation and t in self.entities]

    def sources(self, entity: Entity, relation: str) -> list[Entity]:
        """Entities that point at ``entity`` with ``relation`` (``modify`` points from modifier to head)."""
        return [e for e in self.entities.values() if (relation, entity.id) in e.relations]

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "entities": {
                e.id: {
                    "tokens": e.tokens,
                    "label": e.label,
                    "start_ix": e.start_ix,
                    "end_ix": e.end_ix,
                    "relations": [list(r) for r in e.relations],
                }
                for e in self.entities.values()
            },
        }


def parse_annotation(data: Any, labeler: str = "labeler_1") -> Annotation:
    """Read one report's annotation (plain, or nested under ``labeler``) into an :class:`Annotation`.

    Raises :class:`RadGraphError` naming the entity at fault for malformed input.
    """
    if not isinstance(data, dict):
        raise RadGraphError(f"an annotation must be a JSON object, got {type(data).__name__}")
    body = data
    if "entities" not in data and isinstance(data.get(labeler), dict):
        body = data[labeler]
    raw_entities = body.get("entities")
    if not isinstance(raw_entities, dict):
        raise RadGraphError("the annotation has no 'entities' mapping")
    entities: dict[str, Entity] = {}
    for key, raw in raw_entities.items():
        try:
            relations = tuple((str(r[0]), str(r[1])) for r in raw.get("relations") or [])
            entities[str(key)] = Entity(
                id=str(key),
                tokens=str(raw["tokens"]),
                label=normalise_label(str(raw["label"])),
                start_ix=int(raw["start_ix"]),
                end_ix=int(raw["end_ix"]),
                relations=relations,
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise RadGraphError(f"entity {key!r} is malformed: {err!r}") from err
    text = data.get("text", body.get("text", ""))
    return Annotation(text=str(text), entities=entities)


def iter_annotations(data: Any, labeler: str = "labeler_1") -> Iterator[tuple[str, Annotation | RadGraphError]]:
    """Yield ``(report_id, annotation)`` for a whole RadGraph file; a malformed entry yields its error."""
    if not isinstance(data, dict):
        raise RadGraphError("a RadGraph file must be a JSON object keyed by report id")
    for report_id, entry in data.items():
        try:
            yield str(report_id), parse_annotation(entry, labeler)
        except RadGraphError as err:
            yield str(report_id), err


def read_radgraph_files(
    paths: Sequence[str | Path], labeler: str = "labeler_1"
) -> tuple[dict[str, Annotation | RadGraphError], int]:
    """Read and merge RadGraph JSON files: ``({report key: annotation or its error}, duplicate keys)``.

    A key found in two files keeps its first annotation (files are read in the
    order given). A file that is not a JSON object keyed by report id is an
    error naming the file; one malformed entry only spoils that entry.
    """
    from tqdm.auto import tqdm

    merged: dict[str, Annotation | RadGraphError] = {}
    duplicates = 0
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise RadGraphError(f"{path}: no such RadGraph file")
        try:
            with path.open(encoding="utf-8") as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RadGraphError(f"{path}: not a JSON file ({err}); expected RadGraph JSON keyed by report id") from err
        if not isinstance(data, dict):
            raise RadGraphError(f"{path}: expected a JSON object keyed by report id, got {type(data).__name__}")
        for key, annotation in tqdm(
            iter_annotations(data, labeler), total=len(data), desc=f"reading {path.name}", unit="report", leave=False
        ):
            if key in merged:
                duplicates += 1
                continue
            merged[key] = annotation
    return merged, duplicates
