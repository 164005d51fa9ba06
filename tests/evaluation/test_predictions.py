"""Reading predictions JSONL: every defect is an error naming the file and the line; nothing is skipped."""

import json

import pytest

from s2d_align.evaluation.predictions import TEXT_KEYS, InputError, read_jsonl


def write(tmp_path, lines, name="p.jsonl", raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def record(i, **extra):
    return json.dumps({"id": f"s{i}", "reference": "no effusion .", "prediction": "no effusion .", **extra})


def test_reads_records_in_order_with_integer_ids_and_extra_keys(tmp_path):
    path = write(tmp_path, [record(1, model="x"), json.dumps({"id": 7, "reference": "a", "prediction": ""})])
    assert read_jsonl(path) == [
        {"id": "s1", "reference": "no effusion .", "prediction": "no effusion ."},
        {"id": "7", "reference": "a", "prediction": ""},
    ]


def test_byte_order_mark_and_missing_final_newline_are_fine(tmp_path):
    path = write(tmp_path, [], raw=b"\xef\xbb\xbf" + record(1).encode())
    assert [r["id"] for r in read_jsonl(path)] == ["s1"]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([record(1), "{not json"], r"p.jsonl:2: not valid JSON"),
        ([record(1), json.dumps({"id": "s2", "reference": "x"})], r"p.jsonl:2: missing key\(s\) 'prediction'"),
        ([record(1), record(2), record(1)], r"p.jsonl:3: duplicate id 's1' \(first seen on line 1\)"),
        ([record(1), "", record(2)], r"p.jsonl:2: the line is blank"),
        ([json.dumps([1, 2])], r"p.jsonl:1: expected a JSON object, got list"),
        ([json.dumps({"id": "s1", "reference": None, "prediction": "x"})], r"p.jsonl:1: 'reference' must be a string"),
        ([json.dumps({"id": "", "reference": "x", "prediction": "x"})], r"p.jsonl:1: 'id' must be a non-empty string"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(InputError, match=message):
        read_jsonl(write(tmp_path, lines))


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match="p.jsonl: the file is empty"):
        read_jsonl(write(tmp_path, [], raw=b""))


def test_non_utf8_bytes(tmp_path):
    raw = (record(1) + "\n").encode() + b'{"id": "s2", "reference": "caf\xe9", "prediction": "x"}\n'
    with pytest.raises(InputError, match=r"p.jsonl:2: byte 0xe9 at column 31 is not UTF-8"):
        read_jsonl(write(tmp_path, [], raw=raw))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_text_records_for_the_label_command(tmp_path):
    path = write(tmp_path, [json.dumps({"id": "a", "text": "No effusion."})])
    assert read_jsonl(path, TEXT_KEYS) == [{"id": "a", "text": "No effusion."}]
    with pytest.raises(InputError, match="missing key\\(s\\) 'text'"):
        read_jsonl(write(tmp_path, [record(1)], name="q.jsonl"), TEXT_KEYS)
