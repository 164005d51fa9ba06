"""Outputs are whole or absent; an output that names an input is refused."""

import os

import pytest

from s2d_align import atomic


def test_a_failure_inside_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("a missing image")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["p.jsonl"]


def test_success_replaces_keeps_permissions_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "m.json"
    atomic.write_json(path, {"x": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "x": "é"\n}\n'
    os.chmod(path, 0o640)
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o640
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic.atomic_open(path, "a"):
            pass


def test_an_output_that_is_an_input_is_refused_also_through_a_symlink(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("x")
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    atomic.refuse_overwrite(tmp_path / "other.json", {"--predictions": data, "--radgraph": None})
    for output in (data, link, tmp_path / "." / "p.jsonl"):
        with pytest.raises(ValueError, match=r"is also the input --predictions .*p\.jsonl"):
            atomic.refuse_overwrite(output, {"--predictions": data})


def test_a_figure_is_written_whole_and_a_failed_render_keeps_the_old_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = tmp_path / "curves.png"
    atomic.save_figure(figure, path, dpi=50)
    first = path.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        atomic.save_figure(figure, path, dpi=-1)  # matplotlib refuses before a byte is written
    assert path.read_bytes() == first
    assert os.listdir(tmp_path) == ["curves.png"]
    plt.close(figure)


def test_a_folder_appears_only_when_its_block_succeeds(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(out) as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []
    out.mkdir()  # an empty folder is taken over
    with atomic.atomic_folder(out) as staging:
        assert staging.parent == tmp_path and staging != out
        (staging / "model.json").write_text("{}")
    assert os.listdir(out) == ["model.json"] and os.listdir(tmp_path) == ["model"]
