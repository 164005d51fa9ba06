"""Bootstrap intervals and paired tests over per-report statistics."""

import numpy as np
import pytest

from s2d_align.evaluation.bootstrap import (SampleStatistic, intervals, mean_of, paired_bootstrap, permutation_test,
                                            replicates)
from s2d_align.evaluation.nlg import bleu_from_statistics, score_nlg

REFS = ["no pleural effusion .", "mild cardiomegaly .", "the lungs are clear .", "small left effusion ."] * 5
GOOD = list(REFS)
POOR = ["the heart is enlarged ."] * len(REFS)


def bleu4(predictions):
    stats = score_nlg(REFS, predictions, ("bleu",)).bleu_statistics
    return SampleStatistic(stats, lambda sums, n: bleu_from_statistics(sums)[..., 3])


def test_full_set_value_is_the_toolkit_value():
    result = score_nlg(REFS, POOR[:10] + GOOD[10:], ("bleu",))
    stat = SampleStatistic(result.bleu_statistics, lambda sums, n: bleu_from_statistics(sums)[..., 3])
    assert stat.full() == result.scores["bleu4"]


def test_resampling_frequencies_of_a_two_report_mean():
    # Resampling two reports valued 0 and 1: the mean is 0, 1/2, 1 with probability 1/4, 1/2, 1/4.
    values = replicates({"m": mean_of(np.array([0.0, 1.0]))}, resamples=8000, seed=1)["m"]
    assert set(np.unique(values)) == {0.0, 0.5, 1.0}
    assert np.mean(values == 0.5) == pytest.approx(0.5, abs=0.02)
    assert np.mean(values == 0.0) == pytest.approx(0.25, abs=0.02)


def test_intervals_are_seeded_and_bracket_the_estimate():
    stats = {"bleu4": bleu4(POOR[:10] + GOOD[10:]), "constant": mean_of(np.full(len(REFS), 0.3))}
    first = intervals(stats, resamples=500, seed=7)
    assert first == intervals(stats, resamples=500, seed=7)
    assert first != intervals(stats, resamples=500, seed=8)
    low, high = first["bleu4"]
    assert low < stats["bleu4"].full() < high
    assert first["constant"] == [pytest.approx(0.3), pytest.approx(0.3)]


def test_intervals_are_the_asked_percentiles_exactly():
    # Ten reports valued 0.0 .. 0.9, 2000 seeded resamples: the 5th/95th and 25th/75th percentiles.
    values = mean_of(np.arange(10) / 10)
    assert intervals({"m": values}, resamples=2000, seed=0, level=0.9)["m"] == pytest.approx([0.30, 0.59], abs=1e-12)
    assert intervals({"m": values}, resamples=2000, seed=0, level=0.5)["m"] == pytest.approx([0.39, 0.51], abs=1e-12)
    star = replicates({"m": values}, resamples=2000, seed=0)["m"]
    assert (star.min(), star.max()) != (0.30, 0.59)  # not the [0, 100] range
    paired = paired_bootstrap({"m": values}, {"m": mean_of((np.arange(10) / 10) ** 2)}, resamples=2000, level=0.9)["m"]
    assert paired["delta"] == pytest.approx(-0.165, abs=1e-12)
    assert paired["delta_interval"] == pytest.approx([-0.20205, -0.121], abs=1e-12)
    assert paired["p_value"] == pytest.approx(1 / 2001)


def test_paired_bootstrap():
    same = paired_bootstrap({"bleu4": bleu4(GOOD)}, {"bleu4": bleu4(GOOD)}, resamples=200)["bleu4"]
    assert same["delta"] == 0.0 and same["p_value"] == 1.0 and same["delta_interval"] == [0.0, 0.0]
    better = paired_bootstrap({"bleu4": bleu4(POOR)}, {"bleu4": bleu4(GOOD)}, resamples=200)["bleu4"]
    assert better["delta"] == pytest.approx(1.0, abs=1e-6)
    assert better["p_value"] == 1 / 201
    assert better["delta_interval"][0] > 0.9


def test_permutation_test():
    same = permutation_test({"m": mean_of(np.ones(20))}, {"m": mean_of(np.ones(20))}, rounds=100)["m"]
    assert same["p_value"] == 1.0
    a = mean_of(np.zeros(20))
    b = mean_of(np.ones(20))
    different = permutation_test({"m": a}, {"m": b}, rounds=400, seed=0)["m"]
    assert different["delta"] == 1.0
    # |mean difference| reaches 1 only when no report is swapped or all are: probability 2 / 2**20
    assert different["p_value"] == 1 / 401


def test_errors():
    with pytest.raises(ValueError, match="different numbers of reports"):
        replicates({"a": mean_of(np.ones(3)), "b": mean_of(np.ones(4))}, 10, 0)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        intervals({"a": mean_of(np.ones(3))}, resamples=0)
    with pytest.raises(ValueError, match="confidence level"):
        intervals({"a": mean_of(np.ones(3))}, level=95)
    for level in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="confidence level"):
            paired_bootstrap({"a": mean_of(np.ones(3))}, {"a": mean_of(np.zeros(3))}, resamples=10, level=level)


def test_paired_and_permutation_results_are_exact_for_a_fixed_sample():
    # Two systems on ten reports; each result names both systems' values, the difference and the p-value.
    v = np.arange(10) / 10
    w = np.array([0.1, 0.0, 0.3, 0.2, 0.5, 0.4, 0.7, 0.9, 0.6, 1.0])
    a, b = {"m": mean_of(v), "n": mean_of(v ** 2)}, {"m": mean_of(w), "n": mean_of(w ** 2)}
    permuted = permutation_test(a, b, rounds=300, seed=0)
    assert permuted == {
        "m": {"a": pytest.approx(0.45), "b": pytest.approx(0.47), "delta": pytest.approx(0.02), "p_value": 241 / 301},
        "n": {"a": pytest.approx(0.285), "b": pytest.approx(0.321), "delta": pytest.approx(0.036), "p_value": 159 / 301},
    }
    assert permutation_test(a, b, rounds=999, seed=0)["m"]["p_value"] == 805 / 1000  # four chunks of draws
    paired = paired_bootstrap({"m": mean_of(v)}, {"m": mean_of(w)}, resamples=999, seed=0)["m"]
    assert paired == {"a": pytest.approx(0.45), "b": pytest.approx(0.47), "delta": pytest.approx(0.02),
                      "p_value": 635 / 1000, "delta_interval": [pytest.approx(-0.06), pytest.approx(0.09)]}


def test_documented_defaults_and_edges():
    v, w = {"m": mean_of(np.arange(10) / 10)}, {"m": mean_of(np.arange(10)[::-1] ** 2 / 100)}
    assert intervals(v) == intervals(v, resamples=1000, seed=0, level=0.95)
    assert paired_bootstrap(v, w) == paired_bootstrap(v, w, resamples=1000, seed=0, level=0.95)
    assert permutation_test(v, w) == permutation_test(v, w, rounds=1000, seed=0)
    assert len(replicates(v, resamples=1, seed=0)["m"]) == 1  # one resample is allowed
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"confidence level must be between 0 and 1, got {level}"):
            intervals(v, level=level)
    with pytest.raises(ValueError, match=r"no metric with per-report statistics to test \(METEOR has none"):
        paired_bootstrap(v, {"other": v["m"]})
    with pytest.raises(ValueError, match="resamples must be at least 1, got 0"):
        permutation_test(v, w, rounds=0)


def test_permutation_of_a_multi_feature_statistic_and_chunked_resampling():
    # BLEU-4 pools several n-gram counts per report: the permutation must move every one of them.
    result = permutation_test({"bleu4": bleu4(POOR[:10] + GOOD[10:])}, {"bleu4": bleu4(GOOD)}, rounds=200, seed=0)
    assert result["bleu4"]["delta"] == pytest.approx(0.5609596022730103)
    assert result["bleu4"]["p_value"] == 4 / 201
    # 20,000 reports: resamples are drawn in chunks of 4,000,000 // 20,000 = 200, i.e. two matrix products.
    big = replicates({"m": mean_of(np.arange(20000) % 7)}, resamples=300, seed=0)["m"]
    assert len(big) == 300 and big[:3].tolist() == pytest.approx([3.02545, 2.9913, 2.99615])
