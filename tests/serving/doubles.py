"""A small honest stand-in for ReportGenerator: its report is a function of the pixels it is given.

It lets the HTTP and batching tests say exactly what each answer must be,
and it records every batch it was handed. The real-model tests live in
test_real_model.py and test_browser.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from s2d_align.chexpert import OBSERVATIONS


@dataclass
class FakeMap:
    sentence: str
    map: np.ndarray
    view: int


@dataclass
class FakeReport:
    text: str
    labels: dict
    heatmaps: list = field(default_factory=list)


def describe(views) -> str:
    return " ".join(f"Mean {int(np.asarray(v).mean())} of {v.size[0]}x{v.size[1]}." for v in views)


class PixelMeanGenerator:
    """``batch`` answers "Mean M of WxH." per view; a call costs ``fixed_s`` plus ``per_study_s`` per study."""

    info = {"model": "pixel-mean double"}

    def __init__(self, fixed_s: float = 0.0, per_study_s: float = 0.0):
        self.fixed_s, self.per_study_s = fixed_s, per_study_s
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def batch(self, studies, heatmaps=False):
        if not self.lock.acquire(blocking=False):
            raise AssertionError("the generator was called from two threads at once")
        try:
            self.calls.append(len(studies))
            time.sleep(self.fixed_s + self.per_study_s * len(studies))
            return [self.report(views, heatmaps) for views in studies]
        finally:
            self.lock.release()

    def report(self, views, heatmaps):
        if any(np.asarray(v).mean() == 13 for v in views):
            raise ValueError("a study the model cannot report (pixel mean 13)")
        labels = {name: None for name in OBSERVATIONS} | {"Cardiomegaly": 1}
        maps = []
        if heatmaps:
            heat = np.zeros((4, 4)); heat[0, 0] = 1.0
            maps = [FakeMap(f"Sentence {i}.", heat, i) for i in range(len(views))]
        return FakeReport(describe(views), labels, maps)
