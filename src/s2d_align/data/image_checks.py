"""The start-up image check of ``train``: fast, spread over threads and ranks, and remembered.

Training reads images lazily in data-loader workers, so a missing or cut file
would otherwise stop a run mid-epoch. ``prepare`` vets every image once (a
full decode by default); ``train`` checks again because files move between
prepare and train, but must not spend hours on it: decoding MIMIC-CXR's
~273,000 train+val JPEGs serially takes about 3 h at 0.04 s each, longer than
the distributed timeout. So the start-up check

* reads headers only by default (size, format, end marker: see
  :func:`s2d_align.data.images.check_image`); ``data.image_check: full``
  decodes every pixel, ``none`` only checks that each file exists;
* runs on a thread pool (header reads wait on the disk; Pillow releases the GIL
  while it decodes), each rank on its own shard of the images;
* remembers each image that passed by path, size and modification time in a
  JSON file, so a resume, or a run whose images have not changed, only pays
  one ``stat`` per image. An image that was changed, replaced or touched is
  checked again; a failure is never remembered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from s2d_align import atomic
from s2d_align.data.assembly import threaded
from s2d_align.data.images import ImageError, check_image

# What each level proves, to decide whether a remembered pass covers the check asked for.
_STRENGTH = {"none": 0, "header": 1, "full": 2}


def stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None if it cannot be stat'ed."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


class ImageCheckCache:
    """Passed checks by path: ``{path: [size, mtime_ns, level]}`` in one JSON file, written atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, list] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self.entries = loaded.get("images", {}) if isinstance(loaded, dict) else {}
            except (OSError, ValueError):  # a torn or foreign file: check everything again
                self.entries = {}

    def covers(self, path: Path, level: str, current: tuple[int, int] | None) -> bool:
        entry = self.entries.get(str(path))
        if entry is None or current is None:
            return False
        size, mtime, passed = entry
        return (size, mtime) == current and _STRENGTH.get(passed, -1) >= _STRENGTH[level]

    def update(self, passed: dict[str, list]) -> None:
        self.entries.update(passed)

    def save(self) -> None:
        atomic.write_text(self.path, json.dumps({"version": 1, "images": self.entries}))


def check_shard(
    items: Sequence[tuple[str, Path]],
    level: str,
    cache: ImageCheckCache,
    workers: int,
) -> tuple[list[tuple[str, str, str]], dict[str, list], int]:
    """Check the images of one rank's shard that the cache does not cover.

    Returns ``(problems, passed, checked)``: ``(record_id, path, message)`` per
    unusable image, the new cache entries of the images that passed, and how
    many images were actually opened (0 when the cache covered the shard).
    """
    if level not in _STRENGTH:
        raise ValueError(f"unknown image check level {level!r}; use none, header or full")

    def vet(item: tuple[str, Path]) -> tuple[str, Path, tuple[int, int] | None, str | None, bool]:
        record_id, path = item
        current = stamp(path)
        if cache.covers(path, level, current):
            return record_id, path, current, None, False
        if current is None:
            return record_id, path, None, f"missing file {path}", True
        try:
            check_image(path, level)  # type: ignore[arg-type]
        except ImageError as err:
            return record_id, path, current, str(err), True
        return record_id, path, current, None, True

    problems, passed, checked = [], {}, 0
    for record_id, path, current, error, opened in threaded(vet, list(items), workers):
        checked += opened
        if error is not None:
            problems.append((record_id, str(path), error))
        elif opened:
            passed[str(path)] = [current[0], current[1], level]
    return problems, passed, checked
