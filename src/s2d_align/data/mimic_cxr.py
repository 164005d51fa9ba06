"""MIMIC-CXR: from the PhysioNet downloads (MIMIC-CXR-JPG images and tables, MIMIC-CXR reports) to a manifest.

Inputs (Johnson et al., 2019; credentialed access, never commit any of it):

* ``J``, the MIMIC-CXR-JPG root: ``mimic-cxr-2.0.0-split.csv(.gz)`` (dicom_id,
  study_id, subject_id, split in train/validate/test), ``mimic-cxr-2.0.0-
  metadata.csv(.gz)`` (ViewPosition, StudyDate ``YYYYMMDD``, StudyTime
  ``HHMMSS.f``, stored as numbers so 07:08:08 reads ``70808.0``) and
  ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg``;
* ``R``, the reports: ``files/pXX/pSUBJECT/sSTUDY.txt``;
* optionally RadGraph JSON files, keyed by report path (``pXX/pSUBJECT/sSTUDY.txt``).

One manifest record per study (id ``s<study_id>``): its images (frontal
views first; ``--views frontal`` keeps the frontal ones,
:data:`s2d_align.data.views.FRONTAL_VIEWS`), FINDINGS as the target
and IMPRESSION, both extracted like the official MIT-LCP parser
(:mod:`s2d_align.data.sections`); studies without FINDINGS are skipped, as
in R2Gen and the paper. The official split is kept (``validate`` becomes
``val``) after checking that it is patient-disjoint. References are prior
studies by StudyDate/StudyTime (:mod:`s2d_align.data.references`). With
RadGraph files, studies lacking an annotation are excluded as in the paper
(``require_radgraph``: ``all`` as the paper, ``train`` to keep the usual
validation/test sets, ``none``).

The work is reading ~227,000 small text files and stat-ing ~377,000 JPEGs, so
reports and images are read on a thread pool: the build is bound by the disk,
not by Python (``benchmarks/bench_prepare_mimic.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import re
from datetime import datetime
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from s2d_align.data.assembly import (
    attach_key_phrases,
    attach_radgraph,
    attach_references,
    decode_report,
    threaded,
    vet_images,
    write_outputs,
)
from s2d_align.data.images import MAX_PIXELS
from s2d_align.data.key_phrases import NoRefiner, Refiner
from s2d_align.data.leakage import check_patient_disjoint
from s2d_align.data.manifest import Study
from s2d_align.data.prepare_report import PrepareError, PrepareReport
from s2d_align.data.radgraph import Annotation, RadGraphError, read_radgraph_files
from s2d_align.data.resized import check_resize, write_resized_copies
from s2d_align.data.sections import findings_and_impression
from s2d_align.data.views import is_frontal, view_rank

SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "study_id", "subject_id", "ViewPosition", "StudyDate", "StudyTime")
SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
RULES_SOURCE = "rules:mimic_cxr"


# --------------------------------------------------------------------------- tables


def find_table(root: Path, name: str) -> Path:
    """``name.gz`` or ``name`` in ``root``; a missing table is an error that says what ``root`` should be."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise PrepareError(
        f"{root}: neither {name}.gz nor {name} is here; --jpg-root must be the MIMIC-CXR-JPG root, the folder "
        f"holding {SPLIT_TABLE}.gz, {METADATA_TABLE}.gz and files/"
    )


def read_table(path: Path, required: Sequence[str]) -> list[tuple[str, ...]]:
    """The ``required`` columns of every row of a (gzipped) CSV, after checking the header has them.

    Rows are kept as tuples of those columns only: the metadata table has
    377,110 rows and a dict per row would cost several hundred megabytes.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:  # type: ignore[operator]
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise PrepareError(
                    f"{path}: lacks column(s) {', '.join(missing)}; expected a header with {', '.join(required)} "
                    f"(found {', '.join(reader.fieldnames or []) or 'no header'})"
                )
            rows = [tuple(row.get(c) or "" for c in required) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PrepareError(f"{path}: cannot read this CSV ({err})") from err
    if not rows:
        raise PrepareError(f"{path}: the table has a header but no rows")
    return rows


def files_folder(root: Path, flag: str, holds: str) -> Path:
    """The ``files/`` folder under ``root`` (or ``root`` itself if it is one), holding ``pXX`` groups."""
    for candidate in (root / "files", root):
        if candidate.is_dir() and any(p.name.startswith("p") and p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise PrepareError(f"{root}: no files/pXX/ folders here; {flag} must be the folder whose files/ holds {holds}")


def study_time(date: str, time: str) -> str | None:
    """ISO 8601 from StudyDate (``21800506``) and StudyTime (``213014.531``, or ``70808.0`` for 07:08:08)."""
    date, time = (date or "").strip(), (time or "").strip()
    if not date:
        return None
    try:
        day = datetime.strptime(date.split(".")[0], "%Y%m%d")
        whole, _, fraction = time.partition(".") if time else ("0", "", "")
        clock = whole.zfill(6)
        micro = int((fraction + "000000")[:6]) if fraction else 0
        moment = day.replace(hour=int(clock[:2]), minute=int(clock[2:4]), second=int(clock[4:6]), microsecond=micro)
    except ValueError:
        return None
    return moment.isoformat()


def _digits(value: str) -> str:
    value = value.strip()
    return value[1:] if value[:1] in ("p", "s") and value[1:].isdigit() else value


# --------------------------------------------------------------------------- studies from the tables


@dataclasses.dataclass
class _Draft:
    subject_id: str
    study_id: str
    split: str
    images: dict[str, str]  # dicom_id -> view
    time: str | None = None


def collect_studies(
    split_rows: list[tuple[str, ...]], metadata_rows: list[tuple[str, ...]], report: PrepareReport, where: Path
) -> dict[str, _Draft]:
    """Group the split table's images into studies, with views and times from the metadata.

    Rows are in the column order of :data:`SPLIT_COLUMNS` and :data:`METADATA_COLUMNS`.
    """
    metadata = {row[0].strip(): row for row in metadata_rows}
    drafts: dict[str, _Draft] = {}
    conflicting: set[str] = set()
    members: list[tuple[str, str, str]] = []
    for number, (dicom, study, subject, raw_split) in enumerate(split_rows, start=2):
        split = SPLITS.get(raw_split.strip().lower())
        if split is None:
            raise PrepareError(f"{where}:{number}: split {raw_split!r} is not one of train, validate, test")
        dicom, subject, study = dicom.strip(), _digits(subject), _digits(study)
        members.append((subject, split, f"s{study}"))
        key = f"s{study}"
        draft = drafts.get(key)
        if draft is None:
            drafts[key] = draft = _Draft(subject, study, split, {})
        elif draft.subject_id != subject:
            conflicting.add(key)
        if dicom in draft.images:
            report.fix(key, "duplicate_image_row", dicom)
            continue
        meta = metadata.get(dicom)
        if meta is None:
            report.fix(key, "no_metadata", dicom)
            draft.images[dicom] = "UNKNOWN"
            continue
        _, _, _, view, date, time = meta
        draft.images[dicom] = view.strip().upper() or "UNKNOWN"
        moment = study_time(date, time)
        if moment is not None and (draft.time is None or moment < draft.time):
            draft.time = moment
    for key in conflicting:
        report.skip(key, "duplicate_id", "the same study id is listed under more than one patient")
        del drafts[key]
    check_patient_disjoint(members, str(where))
    return drafts


def read_report(path: Path) -> tuple[str, bool]:
    """A report's text and whether it was not UTF-8 (see :func:`decode_report`)."""
    return decode_report(path.read_bytes())


@dataclasses.dataclass
class _Outcome:
    key: str
    study: Study | None = None
    skip: tuple[str, str] | None = None
    fixes: tuple[tuple[str, str], ...] = ()


def _build_study(key: str, draft: _Draft, reports: Path, images: Path, views: str) -> _Outcome:
    group = f"p{draft.subject_id[:2]}"
    report_file = reports / group / f"p{draft.subject_id}" / f"{key}.txt"
    if not report_file.is_file():
        return _Outcome(key, skip=("missing_report", str(report_file)))
    try:
        text, recoded = read_report(report_file)
    except OSError as err:
        return _Outcome(key, skip=("unreadable_report", f"{report_file}: {err}"))
    fixes = (("report_not_utf8", str(report_file)),) if recoded else ()
    if not text.strip():
        return _Outcome(key, skip=("empty_report", str(report_file)))
    findings, impression = findings_and_impression(text)
    if not findings:
        return _Outcome(key, skip=("no_findings", str(report_file)))
    chosen = sorted(draft.images.items(), key=lambda item: (view_rank(item[1]), item[0]))
    if views == "frontal":
        chosen = [(d, v) for d, v in chosen if is_frontal(v)]
        if not chosen:
            return _Outcome(key, skip=("no_frontal_image", ", ".join(sorted(set(draft.images.values())))))
    folder = images / group / f"p{draft.subject_id}" / key
    study = Study(
        id=key,
        split=draft.split,
        subject_id=draft.subject_id,
        study_id=draft.study_id,
        images=tuple(str(folder / f"{dicom}.jpg") for dicom, _ in chosen),
        views=tuple(view for _, view in chosen),
        findings=findings,
        impression=impression,
        study_time=draft.time,
    )
    return _Outcome(key, study=study, fixes=fixes)


# --------------------------------------------------------------------------- RadGraph


_REPORT_KEY = re.compile(r"(?:^|/)s(\d+)(?:\.txt)?$")


def radgraph_study_key(key: str) -> str | None:
    """``p10/p10000032/s50414267.txt`` (or ``s50414267`` or ``50414267``) -> ``s50414267``."""
    key = key.strip()
    if key.isdigit():
        return f"s{key}"
    match = _REPORT_KEY.search(key)
    return f"s{match.group(1)}" if match else None


def read_radgraph(paths: Sequence[Path], report: PrepareReport) -> dict[str, Annotation | RadGraphError]:
    """RadGraph annotations by study key, with entries that name no MIMIC report counted in the notes."""
    try:
        raw, duplicates = read_radgraph_files(paths)
    except RadGraphError as err:
        raise PrepareError(str(err)) from err
    by_study: dict[str, Annotation | RadGraphError] = {}
    unmatched = 0
    for key, annotation in raw.items():
        study = radgraph_study_key(key)
        if study is None:
            unmatched += 1
            continue
        by_study.setdefault(study, annotation)
    report.notes["radgraph"] = {
        "files": [str(p) for p in paths],
        "entries": len(raw),
        "entries_naming_no_mimic_report": unmatched,
        "duplicate_keys": duplicates,
        "malformed_entries": sum(1 for a in by_study.values() if isinstance(a, RadGraphError)),
    }
    return by_study


# --------------------------------------------------------------------------- the builder


def prepare_mimic_cxr(
    jpg_root: Path,
    reports: Path,
    out: Path,
    radgraph: Sequence[Path] = (),
    views: str = "all",
    reference_fallback: str = "none",
    vision_model: str | None = "microsoft/rad-dino",
    require_radgraph: str = "all",
    refiner: Refiner | None = None,
    check_images: str = "full",
    max_pixels: int | None = MAX_PIXELS,
    workers: int | None = None,
    store_radgraph: bool = True,
    embed_batch_size: int = 16,
    embed_device: str = "cpu",
    image_size: int | None = None,
) -> tuple[Path, PrepareReport]:
    """Build ``OUT/manifest.jsonl`` and ``OUT/prepare_report.json`` from the MIMIC-CXR downloads."""
    if views not in ("all", "frontal"):
        raise ValueError(f"views must be all or frontal, got {views!r}")
    if reference_fallback not in ("none", "retrieval"):
        raise ValueError(f"reference fallback must be none or retrieval, got {reference_fallback!r}")
    if require_radgraph not in ("all", "train", "none"):
        raise ValueError(f"require_radgraph must be all, train or none, got {require_radgraph!r}")
    check_resize(image_size)
    jpg_root, reports, out = Path(jpg_root).resolve(), Path(reports).resolve(), Path(out)
    report = PrepareReport(
        "mimic-cxr",
        {
            "jpg_root": str(jpg_root), "reports": str(reports), "radgraph": [str(p) for p in radgraph],
            "views": views, "reference_fallback": reference_fallback, "require_radgraph": require_radgraph,
            "check_images": check_images, "max_pixels": max_pixels, "image_size": image_size,
        },
    )
    # Every whole-input problem surfaces here, before any long step.
    split_path, metadata_path = find_table(jpg_root, SPLIT_TABLE), find_table(jpg_root, METADATA_TABLE)
    image_files = files_folder(jpg_root, "--jpg-root", "pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg")
    report_files = files_folder(reports, "--reports", "pXX/pSUBJECT/sSTUDY.txt")
    drafts = collect_studies(
        read_table(split_path, SPLIT_COLUMNS), read_table(metadata_path, METADATA_COLUMNS), report, split_path
    )
    annotations = read_radgraph([Path(p) for p in radgraph], report) if radgraph else {}

    outcomes = threaded(
        lambda item: _build_study(item[0], item[1], report_files, image_files, views), sorted(drafts.items()), workers
    )
    studies = []
    for outcome in tqdm(outcomes, total=len(drafts), desc="reading reports", unit="study"):
        for reason, detail in outcome.fixes:
            report.fix(outcome.key, reason, detail)
        if outcome.skip is not None:
            report.skip(outcome.key, *outcome.skip)
        else:
            studies.append(outcome.study)

    studies = vet_images(studies, report, check_images, max_pixels, workers)
    if radgraph:
        required = {"all": lambda s: True, "train": lambda s: s.split == "train", "none": lambda s: False}
        studies, found = attach_radgraph(studies, annotations, report, required[require_radgraph])
    else:
        found = {}
    studies = attach_key_phrases(studies, found, refiner or NoRefiner(), report, RULES_SOURCE, store_radgraph)
    studies.sort(key=lambda s: (s.subject_id, s.study_time or "", s.id))
    if image_size:
        studies = write_resized_copies(studies, out, image_size, report, jpg_root, workers)
    studies = attach_references(
        studies, report, out, prior=True, retrieval=reference_fallback == "retrieval",
        vision_model=vision_model, batch_size=embed_batch_size,
        device=embed_device,
    )
    return write_outputs(studies, out, report), report
