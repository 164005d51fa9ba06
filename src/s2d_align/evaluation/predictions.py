"""Reading the JSONL files that evaluation consumes, rejecting bad input up front.

``generate`` writes one JSON object per line, ``{"id", "reference",
"prediction"}``; ``label`` reads ``{"id", "text"}``. A metric computed over a
silently shortened file is worse than no metric, so every defect -- a line
that is not JSON, a missing key, a duplicate id, bytes that are not UTF-8, an
empty file -- stops the run with the file, the line and what to do
(CONVENTIONS, habit 11). Nothing is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

PREDICTION_KEYS = ("id", "reference", "prediction")
TEXT_KEYS = ("id", "text")


class InputError(ValueError):
    """A JSONL file that cannot be evaluated; the message names the file and the line."""


def read_jsonl(path: Path, keys: Sequence[str] = PREDICTION_KEYS) -> list[dict[str, str]]:
    """Read ``path`` into a list of ``{key: str}`` records, in file order.

    ``keys[0]`` is the record id: an integer id is accepted and turned into its
    decimal string, anything else must be a string. The other keys must hold
    strings (the empty string is a valid report). Extra keys are ignored. A
    UTF-8 byte-order mark on the first line is tolerated; a final newline is
    optional; a blank line anywhere else is an error, because it usually means
    a record was lost when the file was written.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise InputError(f"{path}: the file is empty; it needs one JSON object per line with keys {', '.join(keys)}")

    id_key = keys[0]
    first_line_of: dict[str, int] = {}
    records: list[dict[str, str]] = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(
                f"{where}: byte {line[err.start]:#04x} at column {err.start + 1} is not UTF-8; "
                "re-save the file as UTF-8"
            ) from None
        if not text.strip():
            raise InputError(f"{where}: the line is blank; every line must hold one record (remove it)")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in keys if k not in obj]
        if missing:
            raise InputError(
                f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}; "
                f"every line needs {', '.join(keys)}"
            )
        record_id = obj[id_key]
        if isinstance(record_id, int) and not isinstance(record_id, bool):
            record_id = str(record_id)
        if not isinstance(record_id, str) or not record_id:
            raise InputError(f"{where}: {id_key!r} must be a non-empty string, got {obj[id_key]!r}")
        record = {id_key: record_id}
        for key in keys[1:]:
            if not isinstance(obj[key], str):
                raise InputError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
            record[key] = obj[key]
        if record_id in first_line_of:
            raise InputError(f"{where}: duplicate id {record_id!r} (first seen on line {first_line_of[record_id]})")
        first_line_of[record_id] = number
        records.append(record)
    return records


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    """Write ``records`` one JSON object per line (UTF-8, non-ASCII kept readable)."""
    from s2d_align import atomic

    with atomic.atomic_open(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
