"""Clinical efficacy (CE): precision, recall and F1 of the CheXpert labels of a prediction against its reference.

Both reports are labeled with the same labeler (14 observations, 1 / 0 / -1 /
blank); the reference's labels are the truth. Papers disagree on how to turn
that into three numbers, and rarely say which way they chose, so we compute
every convention in use and name each one:

- **uncertain policy** -- an uncertain label (-1) counts as positive
  (``uncertain_positive``: the CheXbert ``rrg`` mode, LLM-RG4, this paper) or
  as negative (``uncertain_negative``: R2Gen-era code, PromptMRG). Blank and
  0 are always negative.
- **averaging** -- ``micro_14``: true/false positives and false negatives
  summed over the 14 observations and all reports, then P = TP/(TP+FP),
  R = TP/(TP+FN), F1 = 2PR/(P+R) (so the identity holds); ``macro_14``: P, R
  and F1 per observation, then their unweighted mean; ``micro_5`` /
  ``macro_5``: the same over the five CheXpert competition observations
  (:data:`s2d_align.chexpert.FIVE`); ``example_based`` (PromptMRG): P, R and
  F1 = TP / (TP + (FP+FN)/2) per report over the 14, then the mean over
  reports.
- a ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``,
  PromptMRG's ``nan_to_num``).

The headline -- ``ce_precision``, ``ce_recall``, ``ce_f1`` -- is
``micro_14`` with ``uncertain_positive`` (SPEC, section Metrics).

Everything is computed from per-report counts, so the same code serves the
point estimate and the bootstrap resamples (:mod:`.bootstrap`).
"""

from __future__ import annotations

import numpy as np

from s2d_align.chexpert import FIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

POLICIES = ("uncertain_positive", "uncertain_negative")
AVERAGES = ("micro_14", "macro_14", "micro_5", "macro_5", "example_based")
HEADLINE = ("uncertain_positive", "micro_14")

_FIVE_INDEX = np.array([OBSERVATIONS.index(name) for name in FIVE])


def label_matrix(labels: list[dict[str, int | None]]) -> np.ndarray:
    """(N, 14) float array in :data:`OBSERVATIONS` order; NaN for blank."""
    matrix = np.full((len(labels), len(OBSERVATIONS)), np.nan)
    for row, report in enumerate(labels):
        for col, name in enumerate(OBSERVATIONS):
            value = report.get(name)
            if value is not None:
                matrix[row, col] = value
    return matrix


def binarize(matrix: np.ndarray, policy: str) -> np.ndarray:
    """Positive under ``policy``: 1 always, -1 only for ``uncertain_positive``; 0 and blank never."""
    if policy == "uncertain_positive":
        return (matrix == POSITIVE) | (matrix == UNCERTAIN)
    if policy == "uncertain_negative":
        return matrix == POSITIVE
    raise ValueError(f"unknown uncertain policy {policy!r}; choose one of {', '.join(POLICIES)}")


def counts(reference: np.ndarray, prediction: np.ndarray, policy: str) -> np.ndarray:
    """Per-report, per-observation TP / FP / FN: a (N, 3, 14) float array."""
    ref = binarize(reference, policy)
    pred = binarize(prediction, policy)
    return np.stack([ref & pred, ~ref & pred, ref & ~pred], axis=1).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 = 2PR/(P+R), elementwise, zero where undefined."""
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def micro(summed: np.ndarray, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro P/R/F1 from counts summed over reports: ``summed`` is (..., 3, 14)."""
    if subset is not None:
        summed = summed[..., subset]
    total = summed.sum(axis=-1)
    return prf(total[..., 0], total[..., 1], total[..., 2])


def macro(summed: np.ndarray, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Macro P/R/F1: per-observation values, then their mean."""
    if subset is not None:
        summed = summed[..., subset]
    precision, recall, f1 = prf(summed[..., 0, :], summed[..., 1, :], summed[..., 2, :])
    return precision.mean(axis=-1), recall.mean(axis=-1), f1.mean(axis=-1)


def example_based(per_report: np.ndarray) -> np.ndarray:
    """PromptMRG's per-report P, R, F1 over the 14: a (N, 3) array (mean it over reports)."""
    total = per_report.sum(axis=-1)
    tp, fp, fn = total[:, 0], total[:, 1], total[:, 2]
    return np.stack([_ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(tp, tp + 0.5 * (fp + fn))], axis=1)


def average(per_report: np.ndarray, kind: str) -> tuple[float, float, float]:
    """One averaging convention on the (N, 3, 14) counts of one policy."""
    if kind == "example_based":
        return tuple(float(v) for v in example_based(per_report).mean(axis=0))
    summed = per_report.sum(axis=0)
    subset = _FIVE_INDEX if kind.endswith("_5") else None
    p, r, f = (micro if kind.startswith("micro") else macro)(summed, subset)
    return float(p), float(r), float(f)


def clinical_efficacy(reference: np.ndarray, prediction: np.ndarray) -> dict:
    """Every CE convention, per-observation scores and label counts, as a JSON-ready dict."""
    conventions: dict[str, dict] = {}
    per_observation: dict[str, dict] = {}
    for policy in POLICIES:
        per_report = counts(reference, prediction, policy)
        conventions[policy] = {}
        for kind in AVERAGES:
            p, r, f = average(per_report, kind)
            conventions[policy][kind] = {"precision": p, "recall": r, "f1": f}
        summed = per_report.sum(axis=0)
        precision, recall, f1 = prf(summed[0], summed[1], summed[2])
        per_observation[policy] = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(summed[0, i] + summed[2, i]),
            }
            for i, name in enumerate(OBSERVATIONS)
        }
    return {
        "headline": "/".join(HEADLINE),
        "conventions": conventions,
        "per_observation": per_observation,
        "label_counts": {"reference": _label_counts(reference), "prediction": _label_counts(prediction)},
    }


def _label_counts(matrix: np.ndarray) -> dict[str, dict[str, int]]:
    out = {}
    for i, name in enumerate(OBSERVATIONS):
        column = matrix[:, i]
        out[name] = {
            "positive": int((column == POSITIVE).sum()),
            "negative": int((column == 0).sum()),
            "uncertain": int((column == UNCERTAIN).sum()),
            "blank": int(np.isnan(column).sum()),
        }
    return out
