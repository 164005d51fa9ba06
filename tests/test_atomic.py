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
