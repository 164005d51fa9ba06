"""The start-up image check remembers passes by path, size and mtime, and never remembers a failure."""

import os

import numpy as np
from PIL import Image

from s2d_align.data.image_checks import ImageCheckCache, check_shard


def write_images(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"{i}.jpg"
        Image.fromarray(np.full((32, 32), i * 10, dtype=np.uint8)).save(path)
        paths.append(path)
    return [(f"r{i}", p) for i, p in enumerate(paths)]


def test_a_second_check_only_stats_and_a_changed_file_is_checked_again(tmp_path):
    items = write_images(tmp_path / "images")
    cache_file = tmp_path / "run" / "image_checks.json"
    problems, passed, checked = check_shard(items, "header", ImageCheckCache(cache_file), workers=3)
    assert problems == [] and checked == 6 and len(passed) == 6
    cache = ImageCheckCache(cache_file)
    cache.update(passed)
    cache.save()

    assert check_shard(items, "header", ImageCheckCache(cache_file), workers=3) == ([], {}, 0)
    # a header pass does not vouch for a full decode
    problems, passed, checked = check_shard(items, "full", ImageCheckCache(cache_file), workers=3)
    assert (problems, checked) == ([], 6) and {v[2] for v in passed.values()} == {"full"}

    path = items[2][1]
    os.utime(path, ns=(1, 1))  # touched: same bytes, new mtime
    _, passed, checked = check_shard(items, "header", ImageCheckCache(cache_file), workers=3)
    assert checked == 1 and list(passed) == [str(path)]


def test_failures_are_reported_with_their_record_and_not_remembered(tmp_path):
    items = write_images(tmp_path / "images")
    cache_file = tmp_path / "image_checks.json"
    cache = ImageCheckCache(cache_file)
    _, passed, _ = check_shard(items, "header", cache, workers=2)
    cache.update(passed)
    cache.save()
    data = items[1][1].read_bytes()
    items[1][1].write_bytes(data[: len(data) // 2])  # cut short: new size
    items[4][1].unlink()
    problems, _, checked = check_shard(items, "header", ImageCheckCache(cache_file), workers=2)
    assert checked == 2
    assert [(rid, reason.split(" ")[0]) for rid, _, reason in sorted(problems)] == [("r1", "unreadable"), ("r4", "missing")]
    problems, _, checked = check_shard(items, "header", ImageCheckCache(cache_file), workers=2)
    assert checked == 2 and len(problems) == 2


def test_a_torn_cache_file_means_checking_everything(tmp_path):
    items = write_images(tmp_path / "images", 3)
    cache_file = tmp_path / "image_checks.json"
    cache_file.write_text('{"version": 1, "images": {')
    assert check_shard(items, "none", ImageCheckCache(cache_file), workers=1)[2] == 3
