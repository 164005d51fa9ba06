"""The steps every real-data builder shares once it has its studies: vet images, add key phrases and
references, check for leakage, write the manifest and ``prepare_report.json``.

A builder (``iu_xray``, ``mimic_cxr``, ``r2gen`` import) turns its source's
files into :class:`Study` records with findings and image paths; the steps
here are the same for all of them, so they live in one place.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from tqdm.auto import tqdm

from s2d_align.data.findings_rules import extract_positive_findings
from s2d_align.data.images import MAX_PIXELS, ImageError, check_image
from s2d_align.data.key_phrases import Refiner, compose_phrases, refine_all
from s2d_align.data.leakage import annotation_matches_report, check_manifest
from s2d_align.data.manifest import KeyPhrase, Study, write_manifest
from s2d_align.data.prepare_report import PrepareReport
from s2d_align.data.radgraph import Annotation
from s2d_align.data.references import prior_study_references, retrieval_references

MANIFEST_NAME = "manifest.jsonl"
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Image checks and report reads wait on the disk, not the CPU: use more threads than cores."""
    return min(32, 4 * (os.cpu_count() or 1))


def decode_report(raw: bytes) -> tuple[str, bool]:
    """A report's text and whether it was not UTF-8 (then decoded as Windows-1252, or Latin-1 as a last resort).

    Latin-1 maps every byte, so nothing is lost or replaced; the record is kept with the fix ``report_not_utf8``.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252"), True
        except UnicodeDecodeError:
            return raw.decode("latin-1"), True


def threaded(function: Callable[[T], R], items: Sequence[T], workers: int | None = None, chunk: int = 256) -> Iterator[R]:
    """``map(function, items)`` on a thread pool, in order, one task per chunk of items.

    ``ThreadPoolExecutor.map`` makes one future per item; for 377,000 images
    that bookkeeping costs more than the work, so items travel in chunks.
    """
    chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for results in pool.map(lambda part: [function(item) for item in part], chunks):
            yield from results


def vet_images(
    studies: Sequence[Study],
    report: PrepareReport,
    level: str = "header",
    max_pixels: int | None = MAX_PIXELS,
    workers: int | None = None,
) -> list[Study]:
    """Keep each study's usable images; a study left with none is skipped (``no_usable_images``).

    An unusable image is dropped with the fix ``image_dropped:<reason>``; an
    image that loads only after a repair (16-bit, alpha, DICOM) is kept with
    the repair recorded as a fix.
    """
    jobs = [(s.id, i, Path(p)) for s in studies for i, p in enumerate(s.images)]

    def vet(job: tuple[str, int, Path]) -> tuple[str, int, tuple[str, ...] | ImageError]:
        record_id, index, path = job
        try:
            return record_id, index, check_image(path, level, max_pixels)  # type: ignore[arg-type]
        except ImageError as err:
            return record_id, index, err

    outcomes = {(record_id, index): outcome for record_id, index, outcome in tqdm(
        threaded(vet, jobs, workers), total=len(jobs), desc=f"checking images ({level})", unit="img"
    )}

    def kept_path(study: Study, index: int) -> str | ImageError:
        outcome = outcomes[study.id, index]
        if isinstance(outcome, ImageError):
            return outcome
        for fix in outcome:
            report.fix(study.id, f"image_{fix}")
        return study.images[index]

    return keep_images(studies, kept_path, report)


def keep_images(
    studies: Sequence[Study],
    outcome: Callable[[Study, int], str | ImageError],
    report: PrepareReport,
    why_none: str | None = None,
) -> list[Study]:
    """Each study with the images ``outcome`` keeps; a study left with none is skipped (``no_usable_images``).

    ``outcome(study, index)`` gives the path to keep for the study's image
    ``index`` (its own, or a copy's), or the :class:`ImageError` that drops it,
    recorded as the fix ``image_dropped:<reason>``. It is called once per
    image, in order. Views stay paired with their images. The skip's detail is
    ``why_none``, or else the dropped images' reasons.
    """
    kept = []
    for study in studies:
        paths, indices, problems = [], [], []
        for index in range(len(study.images)):
            result = outcome(study, index)
            if isinstance(result, ImageError):
                report.fix(study.id, f"image_dropped:{result.reason}", str(result))
                problems.append(result.reason)
                continue
            paths.append(result)
            indices.append(index)
        if not paths:
            report.skip(study.id, "no_usable_images", why_none or ", ".join(problems or ["no images"]))
            continue
        views = tuple(study.views[i] for i in indices) if len(study.views) == len(study.images) else study.views
        kept.append(dataclasses.replace(study, images=tuple(paths), views=views))
    return kept


def attach_radgraph(
    studies: Sequence[Study],
    annotations: Mapping[str, Annotation | Exception],
    report: PrepareReport,
    required: Callable[[Study], bool],
) -> tuple[list[Study], dict[str, Annotation]]:
    """Pair studies with their RadGraph annotation; a study that must have one and has none is skipped.

    Paper (Datasets): MIMIC-CXR samples lacking RadGraph annotations are
    excluded so every sample has properly annotated key phrases. Reasons:
    ``no_radgraph`` and ``radgraph_malformed``; a study that need not have
    one keeps going with the fix of the same name.
    """
    kept, found = [], {}
    for study in studies:
        annotation = annotations.get(study.id)
        if isinstance(annotation, Annotation):
            if not annotation_matches_report(annotation.text, study.findings, study.impression):
                report.fix(study.id, "radgraph_text_mismatch", "the annotated text is not this report's")
            found[study.id] = annotation
            kept.append(study)
            continue
        reason = "no_radgraph" if annotation is None else "radgraph_malformed"
        detail = "" if annotation is None else str(annotation)
        if required(study):
            report.skip(study.id, reason, detail)
        else:
            report.fix(study.id, reason, detail)
            kept.append(study)
    return kept, found


def attach_key_phrases(
    studies: Sequence[Study],
    annotations: Mapping[str, Annotation],
    refiner: Refiner,
    report: PrepareReport,
    fallback_source: str | None,
    store_radgraph: bool = True,
) -> list[Study]:
    """Stage-3 phrases: composed from the study's own RadGraph and refined, else rule-based (``fallback_source``)."""
    annotated = [s for s in studies if s.id in annotations]
    composed = {
        s.id: compose_phrases(annotations[s.id]) for s in tqdm(annotated, desc="composing key phrases", unit="study")
    }
    refined = refine_all(composed, refiner)
    result = []
    for study in studies:
        if study.id in refined:
            phrases = refined[study.id]
        elif fallback_source is not None:
            phrases = tuple(KeyPhrase(t, fallback_source) for t in extract_positive_findings(study.findings))
        else:
            phrases = ()
        radgraph = annotations[study.id].to_json() if store_radgraph and study.id in annotations else None
        result.append(dataclasses.replace(study, key_phrases=phrases, radgraph=radgraph))
    sources = Counter(k.source for s in result for k in s.key_phrases)
    report.notes["key_phrases"] = {
        "refiner": getattr(refiner, "name", type(refiner).__name__),
        "phrases_by_source": dict(sorted(sources.items())),
        "studies_without_phrases": sum(1 for s in result if not s.key_phrases),
    }
    if hasattr(refiner, "stats"):
        report.notes["key_phrases"]["refinements"] = dict(refiner.stats)
    if hasattr(refiner, "pool"):
        report.notes["key_phrases"]["few_shot_pool"] = {"file": refiner.pool.origin, "note": refiner.pool.note}
    return result


def attach_references(
    studies: Sequence[Study],
    report: PrepareReport,
    out: Path,
    prior: bool,
    retrieval: bool,
    vision_model: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Study]:
    """Stage-2 references: the prior study of the same patient when ``prior``; retrieval for the rest when ``retrieval``."""
    references: dict[str, str | None] = {s.id: None for s in studies}
    how: Counter[str] = Counter()
    if prior:
        references.update(prior_study_references(studies))
        how["prior_study"] = sum(1 for r in references.values() if r is not None)
    if retrieval:
        if not vision_model:
            raise ValueError("retrieving references needs --vision-model (a hub id or a local folder)")
        # Only training studies (the candidates) and studies still without a reference need embedding.
        pool = [s for s in studies if s.split == "train" or references[s.id] is None]
        retrieved, failed = retrieval_references(pool, Path, vision_model, out, batch_size=batch_size, device=device)
        for study_id, reference in retrieved.items():
            if references[study_id] is None and reference is not None:
                references[study_id] = reference
                how["retrieval"] += 1
        for study_id in failed:
            if references[study_id] is None:
                report.fix(study_id, "embedding_failed", "no image could be embedded for retrieval")
    how["none"] = sum(1 for r in references.values() if r is None)
    report.notes["references"] = dict(how)
    return [dataclasses.replace(s, reference_id=references[s.id]) for s in studies]


def write_outputs(studies: Sequence[Study], out: Path, report: PrepareReport) -> Path:
    """Check the guards, then write ``OUT/manifest.jsonl`` and ``OUT/prepare_report.json``."""
    out = Path(out)
    manifest = out / MANIFEST_NAME
    check_manifest(studies, str(manifest))
    if not studies:
        report.write(out)
        raise ValueError(f"no study survived; see {out / 'prepare_report.json'} for why each was skipped")
    write_manifest(manifest, studies)
    report.keep_all((s.id, s.split) for s in studies)
    report.write(out)
    return manifest
