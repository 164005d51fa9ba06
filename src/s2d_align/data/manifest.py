"""The manifest: one JSON object per study per line, the contract every data source writes.

``prepare`` (phantom, IU X-Ray, MIMIC-CXR) writes a manifest; ``train``,
``generate`` and ``export`` read one. Fields:

==============  ==============================================================
id              unique study key
split           ``train`` | ``val`` | ``test``
subject_id      patient id (splits are patient-disjoint)
study_id        the source's study id
study_time      ISO 8601 time of the study, or null
images          image paths, relative to the manifest's folder or absolute
views           one view name per image (``PA``, ``AP``, ``LATERAL``, ...)
findings        the FINDINGS section: the generation target
impression      the IMPRESSION section, or null
reference_id    id of the study whose findings are this study's stage-2
                reference report, or null
key_phrases     stage-3 key phrases: ``{"text", "source"}`` objects
labels          observation -> 1 / 0 / -1 (or null per observation), or null
radgraph        RadGraph annotation of ``findings`` (see ``data.radgraph``), or null
==============  ==============================================================

The auxiliary fields (``reference_id``, ``key_phrases``, ``labels``,
``radgraph``) are for training and analysis only; generation never reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest that cannot be used: names the file, the line and the field."""


@dataclass(frozen=True)
class KeyPhrase:
    text: str
    source: str = "unknown"  # e.g. "radgraph:composed", "radgraph:refined:hf:<model>", "rules"


@dataclass(frozen=True)
class Study:
    id: str
    split: str
    subject_id: str
    study_id: str
    images: tuple[str, ...]
    findings: str
    views: tuple[str, ...] = ()
    study_time: str | None = None
    impression: str | None = None
    reference_id: str | None = None
    key_phrases: tuple[KeyPhrase, ...] = ()
    labels: dict[str, int | None] | None = None
    radgraph: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: asdict deep-copies the RadGraph graph, which
        # dominated the time to write a MIMIC-scale manifest. ``radgraph`` is shared, not copied.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["images"] = list(self.images)
        data["views"] = list(self.views)
        data["key_phrases"] = [asdict(k) for k in self.key_phrases]
        data["labels"] = dict(self.labels) if self.labels is not None else None
        return data


_REQUIRED = ("id", "split", "subject_id", "study_id", "images", "findings")
_FIELDS = set(Study.__dataclass_fields__)


def study_from_json(data: Any, where: str) -> Study:
    """Validate one manifest record; ``where`` (``file:line``) goes into every error."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: a record must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{where}: record {data.get('id', '?')!r} lacks {', '.join(missing)}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ManifestError(f"{where}: record {data['id']!r} has unknown fields {unknown}")
    if data["split"] not in SPLITS:
        raise ManifestError(f"{where}: record {data['id']!r} has split {data['split']!r}; expected one of {SPLITS}")
    for key in ("id", "subject_id", "study_id", "findings"):
        if not isinstance(data[key], str):
            raise ManifestError(f"{where}: record {data.get('id')!r}: {key} must be a string")
    images = data["images"]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise ManifestError(f"{where}: record {data['id']!r}: images must be a non-empty list of paths")
    phrases = []
    for item in data.get("key_phrases") or []:
        if isinstance(item, str):
            phrases.append(KeyPhrase(item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            phrases.append(KeyPhrase(item["text"], str(item.get("source", "unknown"))))
        else:
            raise ManifestError(f"{where}: record {data['id']!r}: bad key phrase {item!r}")
    labels = data.get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(v in (1, 0, -1, None) and not isinstance(v, bool) for v in labels.values())
    ):
        raise ManifestError(f"{where}: record {data['id']!r}: labels must map observations to 1, 0, -1 or null")
    return Study(
        id=data["id"],
        split=data["split"],
        subject_id=data["subject_id"],
        study_id=data["study_id"],
        images=tuple(images),
        findings=data["findings"],
        views=tuple(data.get("views") or ()),
        study_time=data.get("study_time"),
        impression=data.get("impression"),
        reference_id=data.get("reference_id"),
        key_phrases=tuple(phrases),
        labels=labels,
        radgraph=data.get("radgraph"),
    )


def read_manifest(path: str | Path) -> list[Study]:
    """Read and validate a whole manifest; ids must be unique and references must resolve."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest (run `s2d-align prepare ...` first)")
    studies: list[Study] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: not valid JSON ({err.msg})") from err
            study = study_from_json(data, where)
            if study.id in seen:
                raise ManifestError(f"{where}: duplicate id {study.id!r} (first on line {seen[study.id]})")
            seen[study.id] = number
            studies.append(study)
    if not studies:
        raise ManifestError(f"{path}: the manifest is empty")
    dangling = [s.id for s in studies if s.reference_id is not None and s.reference_id not in seen]
    if dangling:
        raise ManifestError(f"{path}: reference_id of {dangling[:5]} names no study in this manifest")
    return studies


def write_manifest(path: str | Path, studies: Iterable[Study]) -> int:
    """Write ``studies`` one per line; atomically, so a failed prepare leaves the old manifest whole."""
    from s2d_align import atomic

    count = 0
    with atomic.atomic_open(path) as handle:
        for study in studies:
            handle.write(json.dumps(study.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def image_path(manifest: str | Path, relative: str) -> Path:
    """Resolve an image path of a manifest record: relative paths are relative to the manifest's folder."""
    candidate = Path(relative)
    return candidate if candidate.is_absolute() else Path(manifest).resolve().parent / candidate


def outside_roots(manifest: str | Path, relative: str, roots: Iterable[str | Path] = ()) -> bool:
    """True when an image path leaves the manifest's folder and every root in ``roots``.

    Paths are normalised (``..`` folded) but symlinks are not followed: a folder
    of images linked into the manifest's folder stays inside it.
    """
    base, allowed = _allowed_roots(manifest, roots)
    return not _inside(_normalised(base, relative), allowed)


def _allowed_roots(manifest: str | Path, roots: Iterable[str | Path]) -> tuple[str, tuple[str, ...]]:
    """The folder relative paths start from, and the normalised folders an image may lie in."""
    base = str(Path(manifest).resolve().parent)
    allowed = (base, os.path.normpath(os.path.abspath(Path(manifest).parent)),
               *(os.path.normpath(os.path.abspath(Path(r).expanduser())) for r in roots))
    return base, tuple(dict.fromkeys(allowed))


def _normalised(base: str, relative: str) -> str:
    """The absolute, ``..``-folded path of ``relative`` (as :func:`image_path` resolves it), as a string."""
    return os.path.normpath(relative if os.path.isabs(relative) else os.path.join(base, relative))


def _inside(path: str, allowed: tuple[str, ...]) -> bool:
    return any(root == os.sep or path == root or path.startswith(root + os.sep) for root in allowed)


def check_image_paths(studies: Iterable[Study], manifest: str | Path, roots: Iterable[str | Path] = (),
                      allow_absolute: bool = False) -> None:
    """Refuse image paths outside the manifest's folder and the given image roots, before any image is read.

    A manifest received from someone else could otherwise make training or
    generation read any file the user can read (``/home/me/.ssh/id_rsa``,
    ``../../secrets``). The builders write absolute paths into the image
    folder they were given: pass that folder as a root (``data.image_root`` /
    ``--images``), or allow absolute paths explicitly.
    """
    if allow_absolute:
        return
    roots = [r for r in roots if r]
    # Strings, and the roots computed once: a 300k-image manifest is checked in about a second.
    base, allowed = _allowed_roots(manifest, roots)
    bad = [(s.id, p) for s in studies for p in s.images if not _inside(_normalised(base, p), allowed)]
    if bad:
        listing = "\n".join(f"  {rid}: {path}" for rid, path in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        inside = ", ".join([str(Path(manifest).resolve().parent), *map(str, roots)])
        raise ManifestError(
            f"{manifest}: {len(bad)} image path(s) lie outside {inside}:\n{listing}{more}\n"
            "name the folder holding the images (train: data.image_root=DIR; generate: --images DIR), "
            "or allow any path (data.allow_absolute_paths=true / --allow-absolute-paths) if you trust this manifest"
        )
