"""Training curves: the rows of curves.csv, the run-wide step axis, and the PNG."""

import csv

from s2d_align.training.curves import curve_rows, total_steps, write_curves
from s2d_align.training.loop import StageResult


def _results():
    s1 = StageResult("s1", 2.0, 2, 6, 1.0, "max epochs", [
        {"step": 3, "epoch": 1, "train_loss": 4.0, "val_loss": 3.0},
        {"step": 6, "epoch": 2, "train_loss": 2.5, "val_loss": 2.0},
    ])
    s2 = StageResult("s2", 1.5, 1, 4, 1.0, "max epochs", [{"step": 4, "epoch": 1, "train_loss": 1.8, "val_loss": 1.5}])
    return [s1, s2]


def test_rows_count_steps_across_stages(tmp_path):
    rows = curve_rows(_results())
    assert [(r["stage"], r["step"], r["run_step"]) for r in rows] == [("s1", 3, 3), ("s1", 6, 6), ("s2", 4, 10)]
    assert total_steps(_results()) == 10
    paths = write_curves(tmp_path, _results())
    with paths["csv"].open() as handle:
        written = list(csv.DictReader(handle))
    assert written[2] == {"stage": "s2", "step": "4", "run_step": "10", "epoch": "1", "train_loss": "1.8", "val_loss": "1.5"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
