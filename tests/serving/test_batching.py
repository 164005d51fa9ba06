"""The dynamic batcher: groups by size and wait, answers each study with its own report, isolates failures."""

import asyncio
import time

import numpy as np
import pytest
from PIL import Image

from s2d_align.serving.batching import DynamicBatcher
from tests.serving.doubles import PixelMeanGenerator, describe


def _views(value: int):
    return [Image.fromarray(np.full((8, 8), value, dtype=np.uint8))]


def _run(generator, studies, max_batch, max_wait_ms, heatmaps=None):
    async def main():
        batcher = DynamicBatcher(lambda s, m: generator.batch(s, heatmaps=m), max_batch, max_wait_ms)
        await batcher.start()
        try:
            flags = heatmaps or [False] * len(studies)
            return await asyncio.gather(*(batcher.submit(s, f) for s, f in zip(studies, flags)), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_sixteen_simultaneous_studies_are_batched_and_each_gets_its_own_report():
    generator = PixelMeanGenerator(fixed_s=0.05)
    studies = [_views(10 * i + 1) for i in range(16)]
    reports = _run(generator, studies, max_batch=8, max_wait_ms=50)
    assert [r.text for r in reports] == [describe(s) for s in studies]
    assert generator.calls == [8, 8]


def test_a_lone_request_waits_at_most_max_wait():
    generator = PixelMeanGenerator()
    start = time.perf_counter()
    (report,) = _run(generator, [_views(7)], max_batch=8, max_wait_ms=200)
    elapsed = time.perf_counter() - start
    assert report.text == "Mean 7 of 8x8." and generator.calls == [1]
    assert 0.15 < elapsed < 2.0


def test_requests_with_and_without_maps_are_batched_apart():
    generator = PixelMeanGenerator(fixed_s=0.02)
    studies = [_views(i + 1) for i in range(6)]
    reports = _run(generator, studies, max_batch=8, max_wait_ms=50, heatmaps=[i % 2 == 0 for i in range(6)])
    assert sorted(generator.calls) == [3, 3]
    assert [len(r.heatmaps) for r in reports] == [1, 0, 1, 0, 1, 0]
    assert [r.text for r in reports] == [describe(s) for s in studies]


def test_a_failing_study_fails_alone_and_its_batch_mates_are_answered():
    generator = PixelMeanGenerator()
    studies = [_views(1), _views(13), _views(3)]
    reports = _run(generator, studies, max_batch=8, max_wait_ms=50)
    assert reports[0].text == "Mean 1 of 8x8." and reports[2].text == "Mean 3 of 8x8."
    assert isinstance(reports[1], ValueError) and "pixel mean 13" in str(reports[1])
    assert generator.calls == [3, 1, 1, 1]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(lambda s, m: s, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        DynamicBatcher(lambda s, m: s, max_wait_ms=-1)
