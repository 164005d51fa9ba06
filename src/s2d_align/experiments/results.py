"""The grid's results: ``results.json``, ``results.md`` and ``plots/``.

Every figure is recomputed from the cells' own prediction files, so a
results file can always be rebuilt from ``DIR/cells``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from s2d_align import atomic
from s2d_align.experiments import statistics as stats
from s2d_align.experiments.grid import CONTROLS, FULL, METRICS, GridSettings

TARGETS = (0.01, 0.02, 0.05)  # CE-F1 differences of the size the paper's tables report


def _statistics(directory: Path, clean: str):
    from s2d_align.evaluation.report import score_records

    records = [json.loads(line) for line in (directory / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return score_records(records, clean=clean, metrics="bleu,rouge_l,ce", resamples=0).statistics


def collect(out: Path, cells: Sequence[str], settings: GridSettings, seconds: dict, wall: float) -> dict:
    from s2d_align.experiments.grid import cell_config

    seeds = list(range(settings.seeds))
    clean = cell_config(FULL, 0, out, settings).evaluate.clean
    per_report: dict[str, list[dict]] = {}
    results: dict = {"grid": settings.grid, "seeds": seeds, "studies": settings.studies,
                     "epoch_scale": settings.epoch_scale, "overrides": list(settings.overrides), "cells": {},
                     "comparisons": {}, "seconds": {"wall": wall, "cells": seconds}}
    for name in cells:
        records = [json.loads((out / "cells" / name / f"seed_{s}" / "metrics.json").read_text()) for s in seeds]
        steps = {r["steps"] for r in records}
        per_report[name] = [_statistics(out / "cells" / name / f"seed_{s}", clean) for s in seeds]
        results["cells"][name] = {
            "controls_for": CONTROLS.get(name, ""),
            "steps": steps.pop() if len(steps) == 1 else sorted(steps),
            "stages": records[0]["stages"],
            "per_seed": {str(s): {**r["metrics"], "per_observation_f1": r["per_observation_f1"]}
                         for s, r in zip(seeds, records)},
            "summary": {m: stats.summary([p[m] for p in per_report[name]]) for m in METRICS},
        }
    if FULL in per_report:
        for name in cells:
            if name != FULL:
                results["comparisons"][name] = {
                    m: stats.paired_difference([p[m] for p in per_report[FULL]], [p[m] for p in per_report[name]])
                    for m in METRICS
                }
    sds = [c["summary"]["ce_f1"]["sd"] for c in results["cells"].values()]
    pooled = float(np.sqrt(np.mean(np.square(sds)))) if sds else 0.0
    results["power"] = {
        "metric": "ce_f1",
        "seed_sd_pooled": pooled,
        "alpha": 0.05,
        "power": 0.8,
        "mde": stats.minimum_detectable_difference(pooled, len(seeds)) if len(seeds) > 1 else None,
        "seeds_needed": {str(d): stats.seeds_needed(pooled, d) for d in TARGETS} if pooled > 0 else None,
    }
    return results


def write_results(out: Path, cells: Sequence[str], settings: GridSettings, seconds: dict, wall: float) -> dict:
    results = collect(out, cells, settings, seconds, wall)
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "results.md", markdown(results))
    write_plots(out, results)
    print(markdown(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}")
    return results


def _cell_text(summary: dict) -> str:
    return f"{summary['mean']:.3f} ± {summary['sd']:.3f} [{summary['ci95'][0]:.3f}, {summary['ci95'][1]:.3f}]"


def markdown(results: dict) -> str:
    seeds = len(results["seeds"])
    lines = [
        f"# Experiment grid `{results['grid']}`: {seeds} seed(s), {results['studies']} phantom studies",
        "",
        "Each figure: mean ± sd over seeds [95 % interval, bootstrap over test reports and seeds].",
        f"Δ CE-F1 is the row minus `{FULL}`, paired on reports and seeds, with its interval and p-value.",
        "",
        "| cell | controls for | steps | CE-F1 | B@4 | R-L | Δ CE-F1 vs full [95 %] (p) |",
        "|---|---|---:|---|---|---|---|",
    ]
    for name, cell in results["cells"].items():
        comparison = results["comparisons"].get(name, {}).get("ce_f1")
        delta = (f"{comparison['difference']:+.3f} [{comparison['ci95'][0]:+.3f}, {comparison['ci95'][1]:+.3f}] "
                 f"(p={comparison['p']:.3f})") if comparison else "—"
        s = cell["summary"]
        lines.append(f"| `{name}` | {cell['controls_for']} | {cell['steps']} | {_cell_text(s['ce_f1'])} | "
                     f"{_cell_text(s['bleu4'])} | {_cell_text(s['rouge_l'])} | {delta} |")
    power = results["power"]
    lines += ["", "## Power", ""]
    if power["mde"] is None:
        lines.append("One seed: no seed spread, so no detectable difference can be given.")
    else:
        lines.append(f"Seed-to-seed sd of CE-F1, pooled over cells: {power['seed_sd_pooled']:.4f}. With {seeds} seeds "
                     f"per cell, the smallest CE-F1 difference detected at 80 % power (two-sided α = 0.05) is "
                     f"**{power['mde']:.4f}**.")
        if power["seeds_needed"]:
            lines.append("Seeds per cell needed to detect: " + ", ".join(
                f"{float(d):.2f} → {n}" for d, n in power["seeds_needed"].items()) + ".")
    lines += ["", f"Wall time: {results['seconds']['wall']:.0f} s.", ""]
    return "\n".join(lines)


def write_plots(out: Path, results: dict) -> None:
    """Validation loss per stage per cell, CE-F1 per cell with its interval, per-observation F1."""
    try:
        import matplotlib
    except ImportError:
        print("plots skipped: install the 'plots' extra (pip install 's2d-align[plots]')")
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    names = list(results["cells"])

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for index, name in enumerate(names):
        with (out / "cells" / name / "seed_0" / "curves.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for stage in dict.fromkeys(r["stage"] for r in rows):
            points = [r for r in rows if r["stage"] == stage]
            axis.plot([int(r["run_step"]) for r in points], [float(r["val_loss"]) for r in points], "-o",
                      color=f"C{index % 10}", markersize=3, label=name if stage == rows[0]["stage"] else None)
    axis.set_xlabel("optimizer step (whole run)")
    axis.set_ylabel("validation loss (seed 0), per stage")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic.save_figure(figure, plots / "validation_loss.png", dpi=100, metadata={"Software": None})
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 4))
    summary = [results["cells"][n]["summary"]["ce_f1"] for n in names]
    means = [s["mean"] for s in summary]
    errors = [[m - s["ci95"][0] for m, s in zip(means, summary)], [s["ci95"][1] - m for m, s in zip(means, summary)]]
    axis.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=4)
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("CE-F1 (mean over seeds, 95 % interval)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic.save_figure(figure, plots / "ce_f1.png", dpi=100, metadata={"Software": None})
    plt.close(figure)

    observations = list(next(iter(results["cells"].values()))["per_seed"]["0"]["per_observation_f1"])
    table = np.array([[np.mean([seed["per_observation_f1"][o] for seed in results["cells"][n]["per_seed"].values()])
                       for o in observations] for n in names])
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(names) + 2))
    image = axis.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(observations)), observations, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(observations)):
            axis.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white")
    figure.colorbar(image, label="F1 (mean over seeds)")
    figure.tight_layout()
    atomic.save_figure(figure, plots / "per_observation_f1.png", dpi=100, metadata={"Software": None})
    plt.close(figure)
