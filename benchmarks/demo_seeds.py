"""The demo's figures as mean ± sd over training seeds: the README's table.

Runs ``s2d-align demo --out OUT/seedN train.seed=N`` for each seed, one after
another (each demo pins the CPU math to 2 threads, so two at once would only
fight for the cores). The phantom and the tiny base models depend on the
demo's own seed (``demo.seed``), not on the training seed, so every run after
the first starts from hard links to the first run's phantom and copies of its
base models instead of drawing and pretraining them again. A finished run is
read back, an interrupted one resumes, so rerunning the command completes it.

Then it prints, for S1 and S3, the mean ± sd (sample sd, n - 1) of each metric
over the seeds, and each seed's own figures.

    PYTHONPATH=src python benchmarks/demo_seeds.py --out /tmp/demo-seeds --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = [("bleu4", "B@4"), ("rouge_l", "R-L"), ("cider", "CIDEr"), ("ce_precision", "CE-P"),
           ("ce_recall", "CE-R"), ("ce_f1", "CE-F1")]
SHARED = ("manifest.jsonl", "prepare_report.json")


def seed_folder(out: Path, seed: int, first: Path | None) -> Path:
    folder = out / f"seed{seed}"
    if first is not None and first != folder and not (folder / "manifest.jsonl").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        images = folder / "images"
        if not images.exists():
            images.mkdir()
            for image in (first / "images").iterdir():
                os.link(image, images / image.name)
        for name in SHARED:
            shutil.copy2(first / name, folder / name)
        shutil.copytree(first / "base_models", folder / "base_models", dirs_exist_ok=True)
    return folder


def run_demo(folder: Path, seed: int) -> dict:
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        command = [sys.executable, "-m", "s2d_align.cli", "demo", "--out", str(folder), f"train.seed={seed}"]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="one folder per seed goes here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results, first = {}, None
    for seed in args.seeds:
        folder = seed_folder(args.out, seed, first)
        results[seed] = run_demo(folder, seed)
        first = first or folder
    print(f"\n{len(args.seeds)} training seeds ({', '.join(map(str, args.seeds))}), "
          f"{results[args.seeds[0]]['n']} test studies; mean ± sd (n - 1)\n")
    print("|          | " + " | ".join(f"{label:>13}" for _, label in METRICS) + " |")
    print("|----------|" + "|".join("-" * 14 + ":" for _ in METRICS) + "|")
    for stage, pick in (("after S1", lambda r: r["s1"]), ("after S3", lambda r: r)):
        cells = []
        for key, _ in METRICS:
            values = [pick(results[s])[key] for s in args.seeds]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        print(f"| {stage} | " + " | ".join(f"{c:>13}" for c in cells) + " |")
    print()
    for seed in args.seeds:
        for stage, pick in (("S1", lambda r: r["s1"]), ("S3", lambda r: r)):
            print(f"seed {seed} {stage}: " + "  ".join(f"{label} {pick(results[seed])[key]:.3f}" for key, label in METRICS))


if __name__ == "__main__":
    main()
