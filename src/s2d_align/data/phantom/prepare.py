"""Writing the phantom dataset: images, manifest and a summary of what was drawn.

The phantom is the default dataset of every demo and end-to-end test, so it
has to be cheap (a 600-study set takes a few seconds on two cores), fully
deterministic per seed (byte-identical files), and shaped like the real thing:
patients with several studies, patient-disjoint splits, reference reports from
the previous study, RadGraph annotations and key phrases for stage 3.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from s2d_align import atomic
from s2d_align.chexpert import OBSERVATIONS
from s2d_align.data.key_phrases import NoRefiner, compose_phrases
from s2d_align.data.manifest import SPLITS, Study, write_manifest
from s2d_align.data.phantom.patients import Patient, simulate_patients
from s2d_align.data.phantom.radiograph import render
from s2d_align.data.phantom.reports import write_report
from s2d_align.data.radgraph import parse_annotation

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
MIN_STUDIES, MIN_IMAGE_SIZE = 10, 64
_IMAGE_NAME = re.compile(r"^p\d+_s\d+\.png$")


def prepare_phantom(out: Path, studies: int = 600, seed: int = 0, image_size: int = 128) -> Path:
    """Write out/manifest.jsonl, out/images/<id>.png and out/prepare_report.json; return the manifest path."""
    if isinstance(studies, bool) or not isinstance(studies, int) or studies < MIN_STUDIES:
        raise ValueError(f"phantom: studies must be an integer >= {MIN_STUDIES} (got {studies!r}); "
                         "fewer cannot fill patient-disjoint train/val/test splits")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"phantom: image_size must be an integer >= {MIN_IMAGE_SIZE} (got {image_size!r}); "
                         "smaller images cannot show the findings")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"phantom: seed must be an integer (got {seed!r})")
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    patients = simulate_patients(studies, seed)
    split_of = assign_splits(patients, seed)
    width = max(4, len(str(len(patients) - 1)))
    records: list[Study] = []
    written: set[str] = set()
    refiner = NoRefiner()
    study_ids = _study_ids(studies, seed)
    with tqdm(total=studies, desc="phantom studies", unit="study", leave=False) as bar:
        for patient in patients:
            subject = f"p{patient.index:0{width}d}"
            previous_id, previous_plan = None, None
            for plan in patient.studies:
                record_id = f"{subject}_s{plan.index:02d}"
                drawing = np.random.default_rng([seed, 2, patient.index, plan.index])
                image = render(patient.anatomy, plan, image_size, drawing)
                Image.fromarray(image, mode="L").save(images / f"{record_id}.png")
                written.add(f"{record_id}.png")
                report = write_report(plan, previous_plan, np.random.default_rng([seed, 3, patient.index, plan.index]))
                phrases = refiner.refine(compose_phrases(parse_annotation(report.radgraph)))
                records.append(Study(
                    id=record_id,
                    split=split_of[patient.index],
                    subject_id=subject,
                    study_id=study_ids[len(records)],
                    images=(f"images/{record_id}.png",),
                    findings=report.findings,
                    views=(plan.view,),
                    study_time=plan.time.isoformat(),
                    impression=report.impression,
                    reference_id=previous_id,
                    key_phrases=tuple(phrases),
                    labels=report.labels,
                    radgraph=report.radgraph,
                ))
                previous_id, previous_plan = record_id, plan
                bar.update(1)
    for stale in images.iterdir():
        if _IMAGE_NAME.match(stale.name) and stale.name not in written:
            stale.unlink()  # left by an earlier, larger phantom in the same folder
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)
    summary = summarise(records, patients, seed=seed, studies=studies, image_size=image_size)
    atomic.write_json(out / "prepare_report.json", summary)
    return manifest


def assign_splits(patients: list[Patient], seed: int) -> dict[int, str]:
    """Patient-disjoint splits, ~70/10/20 of patients, each split holding at least one patient."""
    order = np.random.default_rng([seed, 4]).permutation(len(patients))
    n = len(patients)
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * n))
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * n))
    split_of = {}
    for rank, index in enumerate(order):
        split_of[int(index)] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return split_of


def _study_ids(count: int, seed: int) -> list[str]:
    """Random, unique 8-digit study ids: like MIMIC's, they carry no order (study_time does)."""
    numbers = np.random.default_rng([seed, 5]).choice(90_000_000, size=count, replace=False) + 10_000_000
    return [f"s{n}" for n in numbers]


def summarise(records: list[Study], patients: list[Patient], **parameters) -> dict:
    """Counts per split: studies, patients, views, and how often each observation has each label value."""
    summary: dict = {"source": "phantom", "parameters": parameters, "patients": len(patients),
                     "profiles": dict(sorted(Counter(p.profile for p in patients).items())), "splits": {}}
    for split in SPLITS:
        members = [r for r in records if r.split == split]
        counts = {}
        for observation in OBSERVATIONS:
            values = Counter(r.labels[observation] for r in members)
            counts[observation] = {"1": values[1], "0": values[0], "-1": values[-1], "null": values[None]}
        summary["splits"][split] = {
            "studies": len(members),
            "patients": len({r.subject_id for r in members}),
            "views": dict(sorted(Counter(v for r in members for v in r.views).items())),
            "labels": counts,
            "prevalence": {o: round((c["1"] + c["-1"]) / max(len(members), 1), 4) for o, c in counts.items()},
        }
    return summary
