"""Training curves: ``RUN/curves.csv`` and ``RUN/curves.png``, train and validation loss per stage.

The paper's curriculum (Training Protocol of PAG) is judged by what each stage
does to the loss, so every ``train`` leaves its curves beside its checkpoints.
The x axis counts optimizer steps across the whole run, each stage starting
where the previous one ended, so "S3 after S1 and S2" and "S1 alone" can be
read on one scale. The CSV holds the numbers; the PNG (matplotlib, from the
``plots`` extra) is for the eye, and is skipped with a note when matplotlib is
missing, never failing the run it reports on.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from s2d_align import atomic

COLUMNS = ("stage", "step", "run_step", "epoch", "train_loss", "val_loss")


def curve_rows(results: Sequence) -> list[dict]:
    """One row per validation of every stage; ``run_step`` counts optimizer steps across stages."""
    rows, offset = [], 0
    for result in results:
        for point in result.history:
            rows.append({
                "stage": result.name,
                "step": point["step"],
                "run_step": offset + point["step"],
                "epoch": point["epoch"],
                "train_loss": point["train_loss"],
                "val_loss": point["val_loss"],
            })
        offset += result.history[-1]["step"] if result.history else 0
    return rows


def total_steps(results: Sequence) -> int:
    """Optimizer steps the whole run took (each stage ends with a validation at its last step)."""
    return sum(r.history[-1]["step"] for r in results if r.history)


def write_curves(out: Path, results: Sequence) -> dict[str, Path]:
    """Write ``out/curves.csv`` and, when matplotlib is installed, ``out/curves.png``."""
    out = Path(out)
    rows = curve_rows(results)
    paths = {"csv": out / "curves.csv"}
    with atomic.atomic_open(paths["csv"], newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    try:
        import matplotlib
    except ImportError:
        print(f"curves: wrote {paths['csv']}; install the 'plots' extra (pip install 's2d-align[plots]') for curves.png")
        return paths
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for index, result in enumerate(results):
        points = [r for r in rows if r["stage"] == result.name]
        if not points:
            continue
        colour = f"C{index}"
        x = [r["run_step"] for r in points]
        axis.plot(x, [r["train_loss"] for r in points], "--", color=colour, label=f"{result.name} train")
        axis.plot(x, [r["val_loss"] for r in points], "-o", color=colour, markersize=3, label=f"{result.name} validation")
    axis.set_xlabel("optimizer step (whole run)")
    axis.set_ylabel("report-token loss")
    axis.set_title("training curves per stage")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    paths["png"] = out / "curves.png"
    atomic.save_figure(figure, paths["png"], dpi=100, metadata={"Software": None})
    plt.close(figure)
    return paths
