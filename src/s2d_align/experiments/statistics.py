"""Intervals over reports *and* seeds, paired comparisons, and the detectable difference.

One training seed gives no spread: an interval over test reports alone says
how sure we are of *that* run, not of the recipe. So every interval here comes
from a two-level bootstrap. Each replicate draws test reports with replacement
(the same draw for every seed and every cell, so comparisons stay paired on
reports) and then seeds with replacement; the replicate's value is the mean,
over the drawn seeds, of each seed's corpus metric on the drawn reports. The
per-report statistics and the corpus reducers are the evaluation's own
(:mod:`s2d_align.evaluation.bootstrap`), so BLEU and CE-F1 are recomputed from
resampled counts, not averaged per report.

The minimum detectable difference is the normal-approximation one for two
cells of ``n`` seeds each: ``(z_{1-alpha/2} + z_{power}) * sd * sqrt(2 / n)``,
with ``sd`` the seed-to-seed standard deviation pooled over cells.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from s2d_align.evaluation.bootstrap import SampleStatistic, replicates

RESAMPLES = 1000


def _draws(per_seed: Sequence[SampleStatistic], resamples: int, seed: int) -> np.ndarray:
    """(seeds, resamples) metric values on the shared report draws."""
    return np.stack([replicates({"m": stat}, resamples, seed)["m"] for stat in per_seed])


def _seed_picks(seeds: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed + 1)).integers(0, seeds, size=(resamples, seeds))


def _pooled(draws: np.ndarray, picks: np.ndarray) -> np.ndarray:
    return draws[picks, np.arange(draws.shape[1])[:, None]].mean(axis=1)


def summary(per_seed: Sequence[SampleStatistic], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``{mean, sd, ci95}`` of a metric over seeds; the interval from the reports-and-seeds bootstrap."""
    values = np.array([s.full() for s in per_seed])
    boot = _pooled(_draws(per_seed, resamples, seed), _seed_picks(len(per_seed), resamples, seed))
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "ci95": [float(low), float(high)],
    }


def paired_difference(a: Sequence[SampleStatistic], b: Sequence[SampleStatistic], resamples: int = RESAMPLES,
                      seed: int = 0) -> dict:
    """``{difference, ci95, p}`` of B - A; reports paired, seeds paired by their position."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs as many seeds on both sides ({len(a)} vs {len(b)})")
    difference = float(np.mean([s.full() for s in b]) - np.mean([s.full() for s in a]))
    picks = _seed_picks(len(a), resamples, seed)
    deltas = _pooled(_draws(b, resamples, seed), picks) - _pooled(_draws(a, resamples, seed), picks)
    low, high = np.percentile(deltas, [2.5, 97.5])
    extreme = int(np.sum(np.abs(deltas - difference) >= abs(difference)))
    return {"difference": difference, "ci95": [float(low), float(high)], "p": (extreme + 1) / (resamples + 1)}


def minimum_detectable_difference(sd: float, seeds: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference between two cells that a two-sided test at ``alpha`` finds with ``power``."""
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return z * sd * math.sqrt(2 / seeds)


def seeds_needed(sd: float, difference: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Seeds per cell for :func:`minimum_detectable_difference` to reach ``difference``."""
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil(2 * (z * sd / difference) ** 2))
