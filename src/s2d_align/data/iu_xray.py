"""IU X-Ray (Open-i, Demner-Fushman et al., 2016): report XMLs and PNGs to a manifest.

Inputs (CC BY-NC-ND 4.0: never commit modified copies):

* the reports, ``ecgen-radiology/<n>.xml`` or the ``NLMCXR_reports.tgz`` that
  holds them. Sections are ``<AbstractText Label="FINDINGS|IMPRESSION|...">``,
  images ``<parentImage id="CXR1000_IM-0003-1001">``;
* the PNGs, ``CXR1000_IM-0003-1001.png`` (Open-i) or ``1000_IM-0003-1001.dcm.png``
  (the Kaggle copy), found anywhere under the images folder;
* optionally R2Gen's ``annotation.json``: its ids (``CXR2384_IM-0942``, the
  image series), its split and its image lists; image paths in R2Gen's own
  layout (``CXR2384_IM-0942/0.png``) are used when present, otherwise the
  series' Open-i PNGs are taken in id order;
* optionally a views table (the Kaggle ``indiana_projections.csv`` or any CSV
  with an image and a view/projection column): Open-i records no reliable
  view, so without one every view is ``UNKNOWN``.

A study is one report with its images; its id is the image series
(``CXR1000_IM-0003``), as in R2Gen, so ids agree with or without the
annotation file. FINDINGS is the target; reports without it, or without
images, are skipped. Open-i has no patient linkage: every report is its own
patient, so any split by study is patient-disjoint; without R2Gen's file
each patient goes to train, val or test by a seeded hash of its id, about
70/10/20 (R2Gen's proportions). The stage-2
reference is retrieved (:mod:`s2d_align.data.references`), the key phrases
come from the rule-based extractor (:mod:`s2d_align.data.findings_rules`)
unless RadGraph annotations are given.
"""

from __future__ import annotations

import csv
import hashlib
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from s2d_align.data.assembly import (
    attach_key_phrases,
    attach_radgraph,
    attach_references,
    decode_report,
    vet_images,
    write_outputs,
)
from s2d_align.data.images import MAX_PIXELS
from s2d_align.data.key_phrases import NoRefiner, Refiner
from s2d_align.data.leakage import check_patient_disjoint
from s2d_align.data.manifest import Study
from s2d_align.data.prepare_report import PrepareError, PrepareReport
from s2d_align.data.r2gen import Entry, read_annotation
from s2d_align.data.resized import check_resize, write_resized_copies
from s2d_align.data.radgraph import Annotation, RadGraphError, read_radgraph_files
from s2d_align.data.views import view_rank

RULES_SOURCE = "rules:iu_xray"
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_SERIES = re.compile(r"^(CXR\d+_IM-\d+)")


@dataclass(frozen=True)
class OpenIReport:
    uid: str  # "CXR1000": the report, and in Open-i also the patient
    file: str
    findings: str | None
    impression: str | None
    image_ids: tuple[str, ...]
    recoded: bool = False  # the file was not UTF-8 and was decoded as Windows-1252 (or Latin-1)

    @property
    def study_id(self) -> str:
        """The image series (``CXR1000_IM-0003``), R2Gen's id; the report id when it has no image."""
        for image in self.image_ids:
            match = _SERIES.match(image)
            if match:
                return match.group(1)
        return self.uid


# --------------------------------------------------------------------------- reading the XMLs


def _xml_sources(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".xml"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name, handle.read()
    elif source.is_dir():
        for path in sorted(source.rglob("*.xml")):
            yield str(path), path.read_bytes()
    else:
        raise PrepareError(f"{source}: expected the Open-i report folder (ecgen-radiology/*.xml) or NLMCXR_reports.tgz")


def _section(root: ET.Element, label: str) -> str | None:
    for node in root.iter("AbstractText"):
        if (node.get("Label") or "").strip().upper() == label:
            text = " ".join("".join(node.itertext()).split())
            return text or None
    return None


def read_reports(source: Path, report: PrepareReport) -> list[OpenIReport]:
    """Every readable report XML; unreadable ones are skipped (``unreadable_report``), odd encodings fixed."""
    reports = []
    files = 0
    for name, raw in tqdm(_xml_sources(Path(source)), desc="reading Open-i reports", unit="report"):
        files += 1
        fallback_id = "CXR" + Path(name).stem
        text, recoded = decode_report(raw)
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
        if not text.strip():
            report.skip(fallback_id, "empty_report", name)
            continue
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            report.skip(fallback_id, "unreadable_report", f"{name}: {err}")
            continue
        uid_node = root.find("uId")
        uid = (uid_node.get("id") if uid_node is not None else None) or fallback_id
        images = tuple(node.get("id") for node in root.iter("parentImage") if node.get("id"))
        item = OpenIReport(uid, name, _section(root, "FINDINGS"), _section(root, "IMPRESSION"), images, recoded)
        if recoded:
            report.fix(item.study_id, "report_not_utf8", name)
        reports.append(item)
    if files == 0:
        raise PrepareError(f"{source}: no report XML found; expected ecgen-radiology/<n>.xml files or NLMCXR_reports.tgz")
    return reports


# --------------------------------------------------------------------------- images and views


def image_key(name: str) -> str:
    """``CXR1000_IM-0003-1001.png`` / ``1000_IM-0003-1001.dcm.png`` / ``CXR1000_IM-0003-1001`` -> ``1000_IM-0003-1001``."""
    stem = Path(name).name.split(".")[0]
    return stem[3:] if stem.upper().startswith("CXR") else stem


def index_images(folder: Path) -> dict[str, Path]:
    """Every image under ``folder`` by :func:`image_key`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"{folder}: no such folder; --images must hold the Open-i PNGs (CXR<n>_IM-<s>-<k>.png)")
    index = {}
    for path in folder.rglob("*"):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm") and path.is_file():
            index.setdefault(image_key(path.name), path.resolve())
    if not index:
        raise PrepareError(f"{folder}: no PNG, JPEG or DICOM image here; expected the Open-i PNGs (CXR<n>_IM-<s>-<k>.png)")
    return index


def read_views(path: Path) -> dict[str, str]:
    """Image key -> view from a CSV with an image column and a view column (Kaggle's ``indiana_projections.csv``)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = {f.lower().strip(): f for f in reader.fieldnames or []}
        image_col = next((fields[c] for c in ("filename", "image", "imageid", "image_id") if c in fields), None)
        view_col = next((fields[c] for c in ("projection", "view", "view position", "viewposition") if c in fields), None)
        if image_col is None or view_col is None:
            raise PrepareError(
                f"{path}: expected an image column (filename, image, imageid) and a view column (projection, "
                f"view, ViewPosition); found {', '.join(reader.fieldnames or []) or 'no header'}"
            )
        return {image_key(row[image_col]): (row[view_col] or "").strip().upper() or "UNKNOWN" for row in reader}


def _order_by_view(pairs: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    return sorted(pairs, key=lambda pair: view_rank(pair[1]))


# --------------------------------------------------------------------------- splits


def seeded_split(subject_ids: Sequence[str], seed: int) -> dict[str, str]:
    """About 70/10/20 by patient, each patient on its own: SHA-256 of ``seed:subject_id`` picks the split.

    A patient's split depends on nothing but its id and the seed, so adding or
    dropping a report (a newer download, a stricter filter) moves no other
    patient between splits, as a shuffle of the whole list would. All studies
    of a patient share its split, so the split is patient-disjoint.
    """
    splits = {}
    for subject in subject_ids:
        digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        if position < SPLIT_FRACTIONS[0]:
            splits[subject] = "train"
        elif position < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
            splits[subject] = "val"
        else:
            splits[subject] = "test"
    return splits


# --------------------------------------------------------------------------- the builder


def _studies_from_reports(
    reports: list[OpenIReport], images: dict[str, Path], views: dict[str, str], seed: int, report: PrepareReport
) -> list[Study]:
    candidates: list[tuple[OpenIReport, list[tuple[Path, str]]]] = []
    seen: set[str] = set()
    for item in reports:
        sid = item.study_id
        if sid in seen:
            report.skip(f"{sid}@{Path(item.file).name}", "duplicate_id", f"{item.file} repeats study {sid}")
            continue
        seen.add(sid)
        if not item.image_ids:
            report.skip(sid, "no_images", item.file)
            continue
        if not item.findings:
            report.skip(sid, "no_findings", item.file)
            continue
        found = []
        for image in item.image_ids:
            path = images.get(image_key(image))
            if path is None:
                report.fix(sid, "image_dropped:missing_file", image)
            else:
                found.append((path, views.get(image_key(image), "UNKNOWN")))
        if not found:
            report.skip(sid, "no_usable_images", "none of its images is in the images folder")
            continue
        candidates.append((item, _order_by_view(found)))
    splits = seeded_split([item.uid for item, _ in candidates], seed)
    return [
        Study(
            id=item.study_id, split=splits[item.uid], subject_id=item.uid, study_id=item.study_id,
            images=tuple(str(p) for p, _ in found), views=tuple(v for _, v in found),
            findings=item.findings or "", impression=item.impression,
        )
        for item, found in candidates
    ]


def _entry_images(entry: Entry, item: OpenIReport | None, folder: Path, images: dict[str, Path]) -> list[Path]:
    """R2Gen's paths as given when they exist under ``folder``; else the series' Open-i PNGs in id order."""
    direct = [folder / p for p in entry.image_path]
    if direct and all(p.is_file() for p in direct):
        return [p.resolve() for p in direct]
    if item is None:
        return []
    series = [i for i in sorted(item.image_ids) if i.startswith(entry.id + "-")] or sorted(item.image_ids)
    paths = [images[image_key(i)] for i in series if image_key(i) in images]
    wanted = []
    for given in entry.image_path:
        stem = Path(given).stem
        if stem.isdigit() and int(stem) < len(paths):
            wanted.append(paths[int(stem)])
    return wanted or paths[: max(1, len(entry.image_path))]


def _studies_from_annotation(
    entries: list[Entry], reports: list[OpenIReport], folder: Path, images: dict[str, Path],
    views: dict[str, str], report: PrepareReport,
) -> list[Study]:
    by_uid: dict[str, OpenIReport] = {}
    for item in reports:
        if item.uid in by_uid:
            report.skip(f"{item.study_id}@{Path(item.file).name}", "duplicate_id", f"{item.file} repeats report {item.uid}")
            continue
        by_uid[item.uid] = item
    used: set[str] = set()
    studies, seen = [], set()
    for entry in entries:
        if entry.id in seen:
            report.skip(f"{entry.id}@{entry.split}", "duplicate_id", "the annotation lists this id twice")
            continue
        seen.add(entry.id)
        uid = entry.id.split("_")[0]
        item = by_uid.get(uid)
        if item is None:
            report.fix(entry.id, "no_report_xml", "findings taken from the annotation's report")
        else:
            used.add(uid)
        findings = (item.findings if item else None) or " ".join(entry.report.split())
        if item is not None and not item.findings and findings:
            report.fix(entry.id, "findings_from_annotation", "the XML has no FINDINGS")
        if not findings:
            report.skip(entry.id, "no_findings", "neither the XML nor the annotation has findings")
            continue
        paths = _entry_images(entry, item, folder, images)
        if not paths:
            report.skip(entry.id, "no_usable_images", "no image of this entry is in the images folder")
            continue
        pairs = _order_by_view([(p, views.get(image_key(p.name), "UNKNOWN")) for p in paths])
        studies.append(
            Study(
                id=entry.id, split=entry.split, subject_id=uid, study_id=entry.id,
                images=tuple(str(p) for p, _ in pairs), views=tuple(v for _, v in pairs),
                findings=findings, impression=item.impression if item else None,
            )
        )
    for item in by_uid.values():
        if item.uid not in used:
            report.skip(item.study_id, "not_in_annotation", item.file)
    return studies


def prepare_iu_xray(
    reports: Path,
    images: Path,
    out: Path,
    annotation: Path | None = None,
    seed: int = 0,
    views_csv: Path | None = None,
    reference: str = "retrieval",
    vision_model: str | None = "microsoft/rad-dino",
    radgraph: Sequence[Path] = (),
    refiner: Refiner | None = None,
    check_images: str = "full",
    max_pixels: int | None = MAX_PIXELS,
    workers: int | None = None,
    embed_batch_size: int = 16,
    embed_device: str = "cpu",
    image_size: int | None = None,
) -> tuple[Path, PrepareReport]:
    """Build ``OUT/manifest.jsonl`` and ``OUT/prepare_report.json`` from the Open-i downloads."""
    if reference not in ("retrieval", "none"):
        raise ValueError(f"reference must be retrieval or none, got {reference!r}")
    check_resize(image_size)
    out = Path(out)
    report = PrepareReport(
        "iu-xray",
        {
            "reports": str(reports), "images": str(images), "annotation": str(annotation) if annotation else None,
            "seed": seed, "views_csv": str(views_csv) if views_csv else None, "reference": reference,
            "radgraph": [str(p) for p in radgraph], "check_images": check_images, "max_pixels": max_pixels,
            "image_size": image_size,
        },
    )
    entries = None
    if annotation is not None:
        entries, quirks = read_annotation(annotation)
        report.notes["annotation"] = {"entries": len(entries), **quirks}
        check_patient_disjoint(((e.id.split("_")[0], e.split, e.id) for e in entries), str(annotation))
    image_index = index_images(Path(images))
    views = read_views(Path(views_csv)) if views_csv else {}
    parsed = read_reports(Path(reports), report)
    if entries is None:
        studies = _studies_from_reports(parsed, image_index, views, seed, report)
    else:
        studies = _studies_from_annotation(entries, parsed, Path(images), image_index, views, report)
    studies = vet_images(studies, report, check_images, max_pixels, workers)

    found: dict[str, Annotation] = {}
    if radgraph:
        try:
            raw, _ = read_radgraph_files([Path(p) for p in radgraph])
        except RadGraphError as err:
            raise PrepareError(str(err)) from err
        keyed = {}
        for study in studies:
            for key in (study.id, study.subject_id, study.subject_id.removeprefix("CXR")):
                if key in raw:
                    keyed[study.id] = raw[key]
                    break
        studies, found = attach_radgraph(studies, keyed, report, required=lambda s: False)
    studies = attach_key_phrases(studies, found, refiner or NoRefiner(), report, RULES_SOURCE)
    studies.sort(key=lambda s: (s.split != "train", s.split, s.id))
    if image_size:
        studies = write_resized_copies(studies, out, image_size, report, Path(images), workers)
    studies = attach_references(
        studies, report, out, prior=False, retrieval=reference == "retrieval",
        vision_model=vision_model, batch_size=embed_batch_size,
        device=embed_device,
    )
    return write_outputs(studies, out, report), report
