"""Bootstrap confidence intervals and paired significance tests over reports.

A corpus metric is written as a function of per-report *sufficient
statistics* summed over the reports (:class:`SampleStatistic`): BLEU from
matched n-grams, guesses and lengths; micro CE from true/false positives and
false negatives; mean metrics (ROUGE-L, CIDEr-D, RadGraph F1, example-based
CE) from the per-report value. A resample is then a vector of multiplicities
``w`` and the resampled statistic is ``w @ values`` -- one matrix product for
a thousand resamples, instead of a thousand runs of pycocoevalcap. With all
weights 1 this is exactly the full-set computation.

CIDEr-D's document frequencies come from the whole test set's references and
are held fixed across resamples (recomputing them per resample would change
the metric's definition, not just its sample).

- :func:`intervals`: percentile bootstrap (Efron & Tibshirani, 1993),
  seeded; resampling is over reports, with replacement, N of N.
- :func:`paired_bootstrap`: the same resamples applied to two systems scored
  on the same reports (Koehn, 2004); the p-value is two-sided against the
  bootstrap distribution of the difference shifted to zero
  (Berg-Kirkpatrick et al., 2012): ``(#{|d* - d| >= |d|} + 1) / (B + 1)``.
- :func:`permutation_test`: approximate randomisation (Noreen, 1989; Riezler
  & Maxwell, 2005): each report's pair of outputs is swapped with
  probability 1/2; ``p = (#{|d*| >= |d|} + 1) / (R + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

Reducer = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class SampleStatistic:
    """A corpus metric as ``reduce(sum of values over reports, number of reports)``."""

    values: np.ndarray  # (N, F) per-report statistics
    reduce: Reducer  # (..., F) sums, n -> (...) metric values

    def full(self) -> float:
        return float(self.reduce(self.values.sum(axis=0), len(self.values)))


def mean_of(values: np.ndarray) -> SampleStatistic:
    """The mean of a per-report value."""
    return SampleStatistic(np.asarray(values, dtype=float).reshape(-1, 1), lambda sums, n: sums[..., 0] / n)


def _chunk(n: int) -> int:
    """Resamples per matrix product: at most about four million weights at a time."""
    return max(1, min(256, 4_000_000 // max(n, 1)))


def _tail(level: float) -> float:
    """Percent in each tail of a two-sided ``level`` interval."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    return (1 - level) / 2 * 100


def _shared(a: dict[str, SampleStatistic], b: dict[str, SampleStatistic], resamples: int) -> tuple[list[str], int]:
    """The metrics both systems have, and the number of reports they cover."""
    names = [name for name in a if name in b]
    if not names:
        raise ValueError("no metric with per-report statistics to test (METEOR has none; RadGraph needs annotations)")
    return names, _check({**{f"a:{k}": a[k] for k in names}, **{f"b:{k}": b[k] for k in names}}, resamples)


def _weights(n: int, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Chunks of (b, n) bootstrap multiplicities (each row sums to n)."""
    chunk = _chunk(n)
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        index = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(index.ravel(), minlength=b * n).reshape(b, n).astype(float)


def _check(statistics: dict[str, SampleStatistic], resamples: int) -> int:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    sizes = {len(s.values) for s in statistics.values()}
    if len(sizes) != 1:
        raise ValueError(f"statistics cover different numbers of reports: {sorted(sizes)}")
    return sizes.pop()


def replicates(statistics: dict[str, SampleStatistic], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric on ``resamples`` bootstrap resamples (the same resamples for every metric)."""
    n = _check(statistics, resamples)
    rng = np.random.Generator(np.random.PCG64(seed))
    out: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    for weights in _weights(n, resamples, rng):
        for name, stat in statistics.items():
            out[name].append(stat.reduce(weights @ stat.values, n))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def intervals(statistics: dict[str, SampleStatistic], resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval ``[low, high]`` for each metric."""
    tail = _tail(level)
    return {
        name: [float(v) for v in np.percentile(values, [tail, 100 - tail])]
        for name, values in replicates(statistics, resamples, seed).items()
    }


def paired_bootstrap(a: dict[str, SampleStatistic], b: dict[str, SampleStatistic], resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Difference B - A per metric, its percentile interval and a two-sided p-value."""
    tail = _tail(level)
    names, _ = _shared(a, b, resamples)
    star_a = replicates({k: a[k] for k in names}, resamples, seed)
    star_b = replicates({k: b[k] for k in names}, resamples, seed)
    out = {}
    for name in names:
        delta = b[name].full() - a[name].full()
        deltas = star_b[name] - star_a[name]
        low, high = np.percentile(deltas, [tail, 100 - tail])
        extreme = int(np.sum(np.abs(deltas - delta) >= abs(delta)))
        out[name] = _result(a[name].full(), b[name].full(), delta, (extreme + 1) / (resamples + 1), low, high)
    return out


def permutation_test(a: dict[str, SampleStatistic], b: dict[str, SampleStatistic], rounds: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Approximate randomisation: swap each report's two outputs with probability 1/2."""
    names, n = _shared(a, b, rounds)
    rng = np.random.Generator(np.random.PCG64(seed))
    extreme = dict.fromkeys(names, 0)
    observed = {name: b[name].full() - a[name].full() for name in names}
    chunk = _chunk(n)
    for start in range(0, rounds, chunk):
        swaps = rng.integers(0, 2, size=(min(chunk, rounds - start), n)).astype(float)
        for name in names:
            sum_a, sum_b = a[name].values.sum(axis=0), b[name].values.sum(axis=0)
            moved = swaps @ (b[name].values - a[name].values)
            deltas = b[name].reduce(sum_b - moved, n) - a[name].reduce(sum_a + moved, n)
            extreme[name] += int(np.sum(np.abs(deltas) >= abs(observed[name])))
    return {
        name: _result(a[name].full(), b[name].full(), observed[name], (extreme[name] + 1) / (rounds + 1))
        for name in names
    }


def _result(value_a: float, value_b: float, delta: float, p: float, low: float | None = None,
            high: float | None = None) -> dict[str, float]:
    out = {"a": value_a, "b": value_b, "delta": delta, "p_value": p}
    if low is not None:
        out["delta_interval"] = [float(low), float(high)]
    return out
