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
    assert paths["csv"].read_bytes().startswith(b"stage,step,run_step,epoch,train_loss,val_loss\ns1,3,3,1,4.0,3.0\n")
    assert written[2] == {"stage": "s2", "step": "4", "run_step": "10", "epoch": "1", "train_loss": "1.8", "val_loss": "1.5"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_png_draws_train_and_validation_per_stage_on_the_run_wide_axis(tmp_path, monkeypatch):
    from s2d_align import atomic

    drawn = {}

    def capture(figure, path, **kwargs):
        axis = figure.axes[0]
        drawn.update(path=path, kwargs=kwargs, size=tuple(figure.get_size_inches()), title=axis.get_title(),
                     x=axis.get_xlabel(), y=axis.get_ylabel(),
                     legend=[(t.get_text(), t.get_fontsize()) for t in axis.get_legend().get_texts()],
                     grid=axis.xaxis.get_gridlines()[0].get_alpha(),
                     lines=[(line.get_label(), list(line.get_xdata()), list(line.get_ydata()), line.get_linestyle(),
                             line.get_marker(), line.get_markersize(), line.get_color()) for line in axis.get_lines()])

    monkeypatch.setattr(atomic, "save_figure", capture)
    empty = StageResult("s0", 0.0, 0, 0, 0.0, "max epochs", [])  # a stage without validations draws nothing
    s1, s2 = _results()
    paths = write_curves(tmp_path, [s1, empty, s2])
    assert paths["png"] == drawn["path"] == tmp_path / "curves.png"
    assert drawn["kwargs"] == {"dpi": 100, "metadata": {"Software": None}}  # no version string: same bytes each run
    assert drawn["size"] == (7.0, 4.0)
    assert (drawn["title"], drawn["x"], drawn["y"]) == ("training curves per stage", "optimizer step (whole run)",
                                                         "report-token loss")
    assert drawn["lines"] == [
        ("s1 train", [3, 6], [4.0, 2.5], "--", "None", 6.0, "C0"),
        ("s1 validation", [3, 6], [3.0, 2.0], "-", "o", 3.0, "C0"),
        ("s2 train", [10], [1.8], "--", "None", 6.0, "C2"),  # each stage keeps its colour, drawn or not
        ("s2 validation", [10], [1.5], "-", "o", 3.0, "C2"),
    ]
    assert drawn["legend"] == [(name, 8.0) for name in ("s1 train", "s1 validation", "s2 train", "s2 validation")]
    assert drawn["grid"] == 0.3


def test_without_matplotlib_only_the_csv_is_written_with_a_note(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    paths = write_curves(tmp_path, _results())
    assert paths == {"csv": tmp_path / "curves.csv"} and not (tmp_path / "curves.png").exists()
    assert capsys.readouterr().out == (f"curves: wrote {tmp_path / 'curves.csv'}; install the 'plots' extra "
                                       "(pip install 's2d-align[plots]') for curves.png\n")
