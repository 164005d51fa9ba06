"""R2Gen's ``annotation.json``: the field's interchange format, read tolerantly and written back.

Chen et al. (EMNLP 2020, R2Gen) published one ``annotation.json`` per dataset,
and most report-generation work since reuses them::

    {"train": [{"id": "CXR2384_IM-0942", "report": "...",
                "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"],
                "split": "train"}, ...],
     "val": [...], "test": [...]}

IU X-Ray entries are studies (2069/296/590 in the common file); MIMIC-CXR
entries are *images* (``id`` is the DICOM id) and add ``study_id`` and
``subject_id``; ``image_path`` is relative to the dataset's image folder. The
``report`` is the FINDINGS section.

Copies in circulation have quirks: one keeps the test list under a blank key
``""``, some spell the split ``validate`` or ``valid``. :func:`read_annotation`
takes the split from the top-level key when it names one, else from each
entry's own ``split`` field, and says how often it had to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from s2d_align import atomic
from s2d_align.data.assembly import attach_key_phrases, attach_references, vet_images, write_outputs
from s2d_align.data.images import MAX_PIXELS
from s2d_align.data.key_phrases import NoRefiner, Refiner
from s2d_align.data.leakage import check_patient_disjoint
from s2d_align.data.manifest import Study, image_path, outside_roots
from s2d_align.data.prepare_report import PrepareError, PrepareReport
from s2d_align.data.resized import check_resize, write_resized_copies

SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


@dataclass(frozen=True)
class Entry:
    id: str
    report: str
    image_path: tuple[str, ...]
    split: str
    study_id: str | None = None
    subject_id: str | None = None


def split_name(value: Any) -> str | None:
    return SPLIT_NAMES.get(str(value).strip().lower()) if value is not None else None


def read_annotation(path: str | Path) -> tuple[list[Entry], dict[str, int]]:
    """All entries of an ``annotation.json`` with their split, and counts of the quirks met.

    Raises :class:`PrepareError` when the file is not an R2Gen annotation or
    an entry's split cannot be told.
    """
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: no such annotation file (expected R2Gen's annotation.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrepareError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise PrepareError(f"{path}: expected R2Gen's layout {{'train': [...], 'val': [...], 'test': [...]}}")
    quirks = {"split_from_entry": 0, "split_key_renamed": 0}
    entries: list[Entry] = []
    for key, items in data.items():
        key_split = split_name(key)
        if key_split is not None and key_split != key:
            quirks["split_key_renamed"] += 1
        for index, item in enumerate(items):
            where = f"{path}: entry {index} of list {key!r}"
            if not isinstance(item, dict) or "id" not in item:
                raise PrepareError(f"{where}: expected an object with 'id', 'report' and 'image_path'")
            split = key_split
            if split is None:
                split = split_name(item.get("split"))
                quirks["split_from_entry"] += 1
                if split is None:
                    raise PrepareError(
                        f"{where} (id {item['id']!r}): the list's key names no split and the entry has no usable "
                        f"'split' field ({item.get('split')!r}); expected train, val or test"
                    )
            images = item.get("image_path") or []
            if isinstance(images, str):
                images = [images]
            entries.append(
                Entry(
                    id=str(item["id"]),
                    report=str(item.get("report") or ""),
                    image_path=tuple(str(p) for p in images),
                    split=split,
                    study_id=None if item.get("study_id") is None else str(item["study_id"]),
                    subject_id=None if item.get("subject_id") is None else str(item["subject_id"]),
                )
            )
    if not entries:
        raise PrepareError(f"{path}: the annotation has no entries")
    return entries, quirks


def export_annotation(
    studies: Sequence[Study], manifest: Path, out: Path, image_root: Path | None = None, per_image: bool = False
) -> tuple[int, Path]:
    """Write ``studies`` as an R2Gen ``annotation.json``; returns (entries written, image root used).

    Image paths are written relative to ``image_root`` (default: the deepest
    folder holding every image), since R2Gen joins them to its ``image_dir``.
    ``per_image`` writes one entry per image with the image's file stem as
    ``id``, like R2Gen's MIMIC-CXR file; otherwise one entry per study.
    """
    resolved = {s.id: [image_path(manifest, p) for p in s.images] for s in studies}
    every = [p for paths in resolved.values() for p in paths]
    if not every:
        raise PrepareError(f"{manifest}: no images to export")
    root = Path(image_root).resolve() if image_root else Path(os.path.commonpath(every))
    if root in every:  # a single image: its folder is the root
        root = root.parent
    data: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for study in studies:
        paths = [_relative(p, root) for p in resolved[study.id]]
        base: dict[str, Any] = {"report": study.findings, "split": study.split}
        if study.study_id.isdigit() and study.subject_id.isdigit():
            base.update(study_id=int(study.study_id), subject_id=int(study.subject_id))
        if per_image:
            for path in paths:
                data[study.split].append({"id": Path(path).stem, **base, "image_path": [path]})
        else:
            data[study.split].append({"id": study.id, **base, "image_path": paths})
    atomic.write_json(out, data, indent=1)
    return sum(len(v) for v in data.values()), root


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def studies_from_annotation(
    entries: Sequence[Entry], images: Path, dataset: str, report: PrepareReport
) -> list[Study]:
    """Manifest records from R2Gen entries: one per entry (IU X-Ray) or per ``study_id`` (MIMIC-CXR)."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        key = f"s{entry.study_id}" if dataset == "mimic_cxr" and entry.study_id else entry.id
        if dataset != "mimic_cxr" and key in groups:
            report.skip(f"{key}@{entry.split}", "duplicate_id", "the annotation lists this id twice")
            continue
        groups.setdefault(key, []).append(entry)
    studies = []
    for key, members in groups.items():
        first = members[0]
        findings = " ".join(first.report.split())
        if not findings:
            report.skip(key, "no_findings", "the annotation's report is empty")
            continue
        paths = list(dict.fromkeys(str((images / p).resolve()) for m in members for p in m.image_path))
        outside = [p for m in members for p in m.image_path if outside_roots(images / "annotation", p)]
        if outside:
            report.skip(key, "image_outside_root", f"image path {outside[0]!r} leaves {images}")
            continue
        if not paths:
            report.skip(key, "no_usable_images", "the entry lists no image")
            continue
        subject = _patient(first, dataset)
        studies.append(
            Study(
                id=key, split=first.split, subject_id=subject, study_id=first.study_id or first.id,
                images=tuple(paths), views=("UNKNOWN",) * len(paths), findings=findings,
            )
        )
    return studies


def _patient(entry: Entry, dataset: str) -> str:
    """MIMIC entries name their subject; an IU X-Ray id starts with its report (``CXR2384``_IM-0942)."""
    if entry.subject_id:
        return entry.subject_id
    return entry.id.split("_")[0] if dataset == "iu_xray" else entry.id


def prepare_r2gen(
    annotation: Path,
    images: Path,
    out: Path,
    dataset: str = "auto",
    reference: str = "none",
    vision_model: str | None = "microsoft/rad-dino",
    refiner: Refiner | None = None,
    check_images: str = "header",
    max_pixels: int | None = MAX_PIXELS,
    workers: int | None = None,
    embed_batch_size: int = 16,
    embed_device: str = "cpu",
    image_size: int | None = None,
) -> tuple[Path, PrepareReport]:
    """Import an R2Gen ``annotation.json`` (either dataset) as a manifest, with its ids and split.

    The annotation carries no study times, so MIMIC-CXR references cannot be
    prior studies here (``prepare mimic-cxr`` builds those); ``reference``
    ``retrieval`` retrieves the nearest training study by image instead.
    """
    check_resize(image_size)
    entries, quirks = read_annotation(annotation)
    if dataset == "auto":
        dataset = "mimic_cxr" if any(e.study_id for e in entries) else "iu_xray"
    if dataset not in ("iu_xray", "mimic_cxr"):
        raise ValueError(f"dataset must be auto, iu_xray or mimic_cxr, got {dataset!r}")
    if not Path(images).is_dir():
        raise PrepareError(f"{images}: no such folder; --images must be the folder R2Gen's image_path entries are relative to")
    report = PrepareReport(
        f"r2gen:{dataset}",
        {"annotation": str(annotation), "images": str(images), "reference": reference, "check_images": check_images,
         "image_size": image_size},
    )
    report.notes["annotation"] = {"entries": len(entries), **quirks}
    check_patient_disjoint(((_patient(e, dataset), e.split, e.id) for e in entries), str(annotation))
    studies = studies_from_annotation(entries, Path(images), dataset, report)
    studies = vet_images(studies, report, check_images, max_pixels, workers)
    studies = attach_key_phrases(studies, {}, refiner or NoRefiner(), report, f"rules:{dataset}")
    if image_size:
        studies = write_resized_copies(studies, Path(out), image_size, report, Path(images), workers)
    studies = attach_references(
        studies, report, Path(out), prior=False, retrieval=reference == "retrieval", vision_model=vision_model,
        batch_size=embed_batch_size, device=embed_device,
    )
    return write_outputs(studies, Path(out), report), report
