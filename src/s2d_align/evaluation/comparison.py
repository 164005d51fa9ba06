"""Is system B better than system A? A paired significance test on the same reports.

Both prediction files must cover exactly the same ids with the same
references; anything else is an error that lists the offending ids, because
a comparison over different reports means nothing. Each file is scored with
the same cleaning and the same labeler instance, then every metric with
per-report statistics (BLEU-1..4, ROUGE-L, CIDEr-D, CE P/R/F1, RadGraph F1,
and the model metrics: BERTScore, SembScore, RadCliQ-v1 and 1/RadCliQ-v1,
RaTEScore, GREEN) is tested with :func:`s2d_align.evaluation.bootstrap.paired_bootstrap` or
:func:`~s2d_align.evaluation.bootstrap.permutation_test`. METEOR has no
per-report statistics and is not tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from s2d_align.evaluation import bootstrap
from s2d_align.evaluation.predictions import PREDICTION_KEYS, read_jsonl
from s2d_align.evaluation.radgraph_f1 import load_paired_annotations
from s2d_align.evaluation.labelers import resolve_labeler
from s2d_align.evaluation.report import HEADLINE, check_records, score_records

TESTS = ("bootstrap", "permutation")
DEFAULT_METRICS = "bleu,rouge_l,cider,ce,radgraph"


def align(records_a: list[dict[str, str]], records_b: list[dict[str, str]], name_a: str = "A",
          name_b: str = "B") -> list[dict[str, str]]:
    """``records_b`` in ``records_a``'s order; a ValueError lists ids or references that differ."""
    check_records(records_a)
    check_records(records_b)
    ids_a = {r["id"] for r in records_a}
    by_id_b = {r["id"]: r for r in records_b}
    only_a = sorted(ids_a - set(by_id_b))
    only_b = sorted(set(by_id_b) - ids_a)
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} id(s) only in {name_a}: {only_a[:20]}")
        if only_b:
            parts.append(f"{len(only_b)} id(s) only in {name_b}: {only_b[:20]}")
        raise ValueError("the two systems must be scored on the same ids; " + "; ".join(parts))
    differ = [r["id"] for r in records_a if r["reference"] != by_id_b[r["id"]]["reference"]]
    if differ:
        raise ValueError(f"{name_a} and {name_b} give different references for {len(differ)} id(s): {differ[:20]}")
    return [by_id_b[r["id"]] for r in records_a]


def compare_records(records_a: list[dict[str, str]], records_b: list[dict[str, str]], clean: str = "none",
                    metrics: str | Iterable[str] | None = None, labeler: Any = "rules", *,
                    labeler_options: dict[str, Any] | None = None, radgraph_a: dict | None = None,
                    radgraph_b: dict | None = None, test: str = "bootstrap", resamples: int = 1000, seed: int = 0,
                    confidence: float = 0.95, names: tuple[str, str] = ("A", "B"),
                    metric_models: dict[str, str] | None = None, device: str | None = None) -> dict[str, Any]:
    """Score both systems and test every metric's difference B - A.

    ``metrics=None`` is :data:`DEFAULT_METRICS`, with RadGraph F1 from annotations only; naming ``radgraph``
    in ``metrics`` without annotations runs the RadGraph model on both systems.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    records_b = align(records_a, records_b, *names)
    shared = resolve_labeler(labeler, labeler_options)
    models = {"metric_models": metric_models, "device": device, "radgraph_model": metrics is not None}
    metrics = DEFAULT_METRICS if metrics is None else metrics
    a = score_records(records_a, clean, metrics, shared, radgraph=radgraph_a, resamples=0, **models)
    b = score_records(records_b, clean, metrics, shared, radgraph=radgraph_b, resamples=0, **models)
    if test == "bootstrap":
        results = bootstrap.paired_bootstrap(a.statistics, b.statistics, resamples, seed, confidence)
    else:
        results = bootstrap.permutation_test(a.statistics, b.statistics, resamples, seed)
    ordered = {key: results[key] for key in HEADLINE if key in results}
    not_tested = {key: "no per-report statistics (corpus METEOR comes from the jar)" for key in ("meteor",)
                  if key in a.metrics and key in b.metrics}
    return {
        "systems": {"a": names[0], "b": names[1]},
        "n": len(records_a),
        "test": "paired bootstrap" if test == "bootstrap" else "approximate randomisation",
        "resamples": resamples,
        "seed": seed,
        "level": confidence if test == "bootstrap" else None,
        "cleaning": clean,
        "labeler": a.metrics.get("ce", {}).get("labeler"),
        "metrics": ordered,
        "not_tested": not_tested,
        "not_run": {**a.metrics["not_run"], **{f"{k} ({names[1]})": v for k, v in b.metrics["not_run"].items()
                                                if k not in a.metrics["not_run"]}},
    }


def compare_files(path_a: Path, path_b: Path, clean: str = "none", metrics: str | Iterable[str] | None = None,
                  labeler: Any = "rules", *, radgraph_a: Path | None = None, radgraph_b: Path | None = None,
                  **options: Any) -> dict[str, Any]:
    """:func:`compare_records` on two predictions JSONL files."""
    records_a = read_jsonl(Path(path_a), PREDICTION_KEYS)
    records_b = read_jsonl(Path(path_b), PREDICTION_KEYS)
    if (radgraph_a is None) != (radgraph_b is None):
        raise ValueError("RadGraph F1 needs annotations for both systems (--radgraph-a and --radgraph-b)")
    return compare_records(
        records_a, records_b, clean, metrics, labeler,
        radgraph_a=load_paired_annotations(Path(radgraph_a)) if radgraph_a else None,
        radgraph_b=load_paired_annotations(Path(radgraph_b)) if radgraph_b else None,
        names=(str(path_a), str(path_b)), **options,
    )


def format_comparison(result: dict[str, Any], digits: int = 4) -> str:
    """A Markdown table: metric, A, B, B - A, its interval (bootstrap), p-value."""
    interval = result["test"] == "paired bootstrap"
    header = ["metric", "A", "B", "B - A"] + ([f"{result['level']:.0%} interval"] if interval else []) + ["p"]
    rows = []
    for key, r in result["metrics"].items():
        row = [key, f"{r['a']:.{digits}f}", f"{r['b']:.{digits}f}", f"{r['delta']:+.{digits}f}"]
        if interval:
            low, high = r["delta_interval"]
            row.append(f"[{low:+.{digits}f}, {high:+.{digits}f}]")
        row.append(f"{r['p_value']:.4f}")
        rows.append(row)
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |" for x in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    caption = (f"A = {result['systems']['a']}, B = {result['systems']['b']}; {result['n']} reports; "
               f"{result['test']}, {result['resamples']} resamples, seed {result['seed']}")
    return "\n".join([caption, *lines])
