"""Do the grounding maps fall on the finding they describe? Measured on the phantom test split.

For the phantom every finding's drawn position is known: the study's image is
rendered again (same patient, same pose, exposure and noise) without that
finding, and the finding's *region* is where the two renderings differ by
more than ``--threshold`` gray levels. For each generated sentence that names
exactly one CheXpert observation as present (rules labeler), and that
finding is truly in the study, we take the sentence's grounding map
(:mod:`s2d_align.inference.grounding`) and measure

* ``inside``: the map's mass inside the region (patch-level: each patch
  counts by the share of its pixels in the region);
* ``share``: the region's share of the image (the same, for a uniform map).

A map that ignores the image scores ``inside == share`` on average; the
figure is mean ``inside`` against mean ``share``, their ratio, and the share
of sentences with ``inside > share``. Run::

    PYTHONPATH=src python benchmarks/grounding_phantom.py --run runs/demo [--limit 300]

It reads the run's ``checkpoints/s3`` and ``manifest.jsonl`` (and the
phantom parameters from ``prepare_report.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image


def test_plans(run: Path) -> dict[str, tuple]:
    """Per test study id: what renders it again (patient, plan, observation names, size, seed)."""
    from s2d_align.data.phantom.patients import OBSERVATION_OF, simulate_patients
    from s2d_align.data.phantom.prepare import assign_splits

    parameters = json.loads((run / "prepare_report.json").read_text())["parameters"]
    seed, studies, size = parameters["seed"], parameters["studies"], parameters["image_size"]
    patients = simulate_patients(studies, seed)
    split_of = assign_splits(patients, seed)
    width = max(4, len(str(len(patients) - 1)))
    return {
        f"p{p.index:0{width}d}_s{plan.index:02d}": (p, plan, OBSERVATION_OF, size, seed)
        for p in patients
        if split_of[p.index] == "test"
        for plan in p.studies
    }


def region_of(entry, observation: str, threshold: float) -> np.ndarray | None:
    from s2d_align.data.phantom.radiograph import render

    patient, plan, observation_of, size, seed = entry
    kinds = [f for f in plan.findings if observation_of[f.kind] == observation]
    if not kinds:
        return None
    full = render(patient.anatomy, plan, size, np.random.default_rng([seed, 2, patient.index, plan.index]))
    without = dataclasses.replace(plan, findings=tuple(f for f in plan.findings if f not in kinds))
    bare = render(patient.anatomy, without, size, np.random.default_rng([seed, 2, patient.index, plan.index]))
    return np.abs(full.astype(np.int16) - bare.astype(np.int16)) > threshold


def patch_shares(region: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Share of each patch's pixels inside the region, the region stretched to the model's input as the map is."""
    resized = Image.fromarray(region.astype(np.uint8) * 255).resize((cols * 16, rows * 16), Image.BILINEAR)
    values = np.asarray(resized, dtype=np.float64) / 255.0
    return values.reshape(rows, 16, cols, 16).mean(axis=(1, 3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--stage", default="s3")
    parser.add_argument("--limit", type=int, default=0, help="test studies to use (0: all)")
    parser.add_argument("--threshold", type=float, default=12.0, help="gray levels of difference that mark a region")
    args = parser.parse_args()

    from s2d_align import ReportGenerator
    from s2d_align.data.manifest import image_path, read_manifest
    from s2d_align.evaluation.labelers.rules import RuleLabeler

    run = Path(args.run)
    started = time.perf_counter()
    gen = ReportGenerator.from_pretrained(run / "checkpoints" / args.stage)
    manifest = run / "manifest.jsonl"
    entries = test_plans(run)
    studies = [s for s in read_manifest(manifest) if s.split == "test"]
    if args.limit:
        studies = studies[: args.limit]
    labeler = RuleLabeler()
    inside, share = [], []
    by_observation: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sentences_seen = 0
    for study in studies:
        report = gen(image_path(manifest, study.images[0]), heatmaps=True)
        for item in report.heatmaps:
            sentences_seen += 1
            positive = [o for o, v in labeler.label([item.sentence])[0].items() if v == 1 and o != "No Finding"]
            if len(positive) != 1:
                continue
            region = region_of(entries[study.id], positive[0], args.threshold)
            if region is None or not region.any():
                continue  # a false positive sentence: no region to compare with
            shares = patch_shares(region, *item.map.shape)
            inside.append(float((item.map * shares).sum()))
            share.append(float(shares.mean()))
            by_observation[positive[0]].append((inside[-1], share[-1]))
    elapsed = time.perf_counter() - started
    print(f"run {run}, stage {args.stage}: {len(studies)} test studies, {sentences_seen} sentences, "
          f"{len(inside)} true-positive single-finding sentences ({elapsed:.0f} s)")
    if not inside:
        print("no sentence names a finding that is in its study: nothing to measure")
        return 0
    inside_a, share_a = np.array(inside), np.array(share)
    print(f"mean map mass inside the finding's region: {inside_a.mean():.4f}")
    print(f"mean region share of the image:            {share_a.mean():.4f}")
    print(f"ratio (1 = no better than a uniform map):  {inside_a.mean() / share_a.mean():.3f}")
    print(f"sentences with inside > share:             {(inside_a > share_a).mean():.3f}")
    print("per observation: n, mean inside, mean share")
    for observation, pairs in sorted(by_observation.items()):
        values = np.array(pairs)
        print(f"  {observation:28s} {len(pairs):4d}  {values[:, 0].mean():.4f}  {values[:, 1].mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
