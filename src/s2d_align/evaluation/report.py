"""Scoring a predictions file: every metric, how it was computed, its interval, and the files a paper needs.

``evaluate_file`` reads predictions JSONL (``{"id", "reference",
"prediction"}`` per line), scores it and writes three files:

- ``metrics.json`` -- the headline numbers at the top level (``bleu1`` ..
  ``bleu4``, ``meteor``, ``rouge_l``, ``cider``, ``ce_precision``,
  ``ce_recall``, ``ce_f1``, ``rg_e``, ``rg_er``, ``rg_er_bar``), then every
  CE convention and per-observation score, bootstrap intervals, the cleaning,
  the conventions in words, what did not run and why, and the versions used;
- ``metrics.md`` -- a Markdown table ready for a paper, with the conventions
  underneath;
- ``metrics.samples.csv`` -- one row per report (per-report BLEU-4, ROUGE-L,
  CIDEr-D, METEOR and RadGraph F1 when computed, and the CheXpert labels of
  both sides) for error analysis.

A metric that cannot run (METEOR without Java, RadGraph F1 in the default
set without annotations) is listed under ``not_run`` with the reason; nothing
is faked. The model metrics (:mod:`s2d_align.evaluation.model_metrics`) are
checked and loaded before any scoring starts.
"""

from __future__ import annotations

import csv
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from s2d_align import atomic
from s2d_align.chexpert import OBSERVATIONS
from s2d_align.evaluation import bootstrap
from s2d_align.evaluation.bootstrap import SampleStatistic, mean_of
from s2d_align.evaluation.cleaning import DESCRIPTIONS, cleaner
from s2d_align.evaluation.clinical import clinical_efficacy, counts, label_matrix, micro
from s2d_align.evaluation import model_metrics
from s2d_align.evaluation.labelers import resolve_labeler
from s2d_align.evaluation.nlg import BLEU_KEYS, NLG_METRICS, bleu_from_statistics, java_version, score_nlg
from s2d_align.evaluation.predictions import PREDICTION_KEYS, read_jsonl
from s2d_align.evaluation.radgraph_f1 import RG_KEYS, load_annotation_files, load_paired_annotations, radgraph_scores

METRICS = ("bleu", "rouge_l", "cider", "meteor", "ce", "radgraph")
"""The default set: runs with the core dependencies alone."""
ALL_METRICS = (*METRICS, *(m for m in model_metrics.MODEL_METRICS if m not in METRICS))
MODEL_KEYS = tuple(k for name, keys in model_metrics.KEYS.items() if name != "radgraph" for k in keys)
HEADLINE = (*BLEU_KEYS, "meteor", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1", *RG_KEYS, *MODEL_KEYS)

_NO_RADGRAPH = (
    "no RadGraph annotations were given (see the command's --radgraph-* options); the RadGraph model annotates "
    "both sides only when radgraph is named in --metrics (the 'metrics' extra)"
)
_NO_METEOR_INTERVAL = (
    "the METEOR jar aggregates corpus statistics it does not return per report, so no bootstrap interval"
)

CONVENTIONS = {
    "tokenisation": "whitespace after cleaning; no PTB tokeniser; references never truncated",
    "bleu": "pycocoevalcap 1.2 Bleu(4): corpus level, 'closest' reference length, +1e-15 / +1e-9 smoothing",
    "meteor": "pycocoevalcap 1.2 METEOR 1.5 jar (-l en -norm); corpus score as the jar aggregates it",
    "rouge_l": "pycocoevalcap 1.2 Rouge: LCS F-measure, beta 1.2, tokens = text.split(' '), mean over reports",
    "cider": "pycocoevalcap 1.2 Cider (CIDEr-D: clipping, Gaussian length penalty sigma 6, x10), "
             "document frequencies from this test set's references, mean over reports",
    "ce": "labels of reference (truth) and prediction by the same labeler, on the cleaned text; headline = "
          "micro over the 14 observations, uncertain (-1) positive, blank and 0 negative; zero denominators give 0",
    "radgraph": "RG_E / RG_ER / RG_ER-bar (F1RadGraph simple / partial / complete) from given annotations, "
                "per-report F1, mean over reports",
    "intervals": "percentile bootstrap over reports (N of N with replacement), seeded; corpus metrics "
                 "recomputed from summed per-report statistics; CIDEr-D document frequencies held fixed",
}


@dataclass
class Evaluation:
    """The result of scoring: the metrics dict, per-report rows, and the statistics behind the intervals."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    statistics: dict[str, SampleStatistic] = field(default_factory=dict)


def parse_metrics(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"bleu,ce"`` -> ``("bleu", "ce")``; None means all of :data:`METRICS` (the model metrics are opt-in)."""
    if spec is None:
        return METRICS
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    unknown = [s for s in items if s not in ALL_METRICS]
    if unknown or not items:
        raise ValueError(f"unknown metric(s) {unknown or items}; choose a comma-separated subset of "
                         f"{','.join(ALL_METRICS)}")
    return tuple(m for m in ALL_METRICS if m in items)


def score_records(
    records: Iterable[dict[str, str]],
    clean: str = "none",
    metrics: str | Iterable[str] | None = None,
    labeler: Any = "rules",
    *,
    labeler_options: dict[str, Any] | None = None,
    radgraph: dict[str, tuple] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    meteor_timeout_s: float | None = None,
    metric_models: dict[str, str] | None = None,
    device: str | None = None,
    radgraph_model: bool | None = None,
) -> Evaluation:
    """Score ``records`` (``{"id", "reference", "prediction"}``); see :func:`evaluate_records`.

    RadGraph F1 comes from ``radgraph`` annotations when given; otherwise the
    RadGraph model annotates both sides when ``radgraph_model`` is true, which
    by default it is when ``metrics`` names the metrics (the default set never
    loads a model).
    """
    records = list(records)
    check_records(records)
    if resamples < 0:
        raise ValueError(f"resamples must be 0 (no intervals) or more, got {resamples}")
    wanted = parse_metrics(metrics)
    by_model = "radgraph" in wanted and radgraph is None and (metrics is not None if radgraph_model is None
                                                               else radgraph_model)
    if "radgraph" in (metric_models or {}) and not by_model:
        raise model_metrics.MetricSetupError(
            "--metric-model radgraph is for RadGraph F1 by model: give it with --metrics ...,radgraph and no "
            "RadGraph annotations")
    neural = tuple(m for m in model_metrics.MODEL_METRICS if m in wanted and (m != "radgraph" or by_model))
    radeval_version = model_metrics.check(neural, metric_models, device)  # before any work: extra, models, GPU
    scorers = model_metrics.load(neural, metric_models, device)  # every model built (and fitted) before scoring
    clean_text = cleaner(clean)
    ids = [r["id"] for r in records]
    references = [clean_text(r["reference"]) for r in records]
    predictions = [clean_text(r["prediction"]) for r in records]

    nlg = score_nlg(references, predictions, tuple(m for m in NLG_METRICS if m in wanted), meteor_timeout_s)
    scores: dict[str, float] = dict(nlg.scores)
    not_run: dict[str, str] = dict(nlg.skipped)
    per_report: dict[str, np.ndarray] = dict(nlg.per_sample)
    statistics = _nlg_statistics(nlg)

    details: dict[str, Any] = {}
    labels: tuple[list, list] | None = None
    labeler_version = None
    if "ce" in wanted:
        labeler = resolve_labeler(labeler, labeler_options)
        labeler_version = f"{labeler.name} {labeler.version}"
        labels = _label_both(labeler, references, predictions)
        details["ce"] = {"labeler": labeler_version, **_clinical(labels, scores, statistics)}

    if "radgraph" in wanted and radgraph is not None:
        _radgraph(ids, radgraph, scores, statistics, per_report)
    elif "radgraph" in wanted and not by_model:
        not_run["radgraph"] = _NO_RADGRAPH

    conventions = {k: v for k, v in CONVENTIONS.items() if k in wanted or k in ("tokenisation", "intervals")}
    for name, result in model_metrics.run(scorers, references, predictions).items():
        scores.update(result.scores())
        statistics.update(result.statistics())
        per_report.update(result.per_report)
        conventions[name] = result.convention

    metrics_out: dict[str, Any] = {key: scores[key] for key in HEADLINE if key in scores}
    metrics_out["n"] = len(records)
    metrics_out["cleaning"] = {"scheme": clean, "description": DESCRIPTIONS[clean]}
    metrics_out.update(details)
    if resamples > 0 and statistics:
        metrics_out["confidence_intervals"] = bootstrap.intervals(statistics, resamples, seed, confidence)
        metrics_out["bootstrap"] = {"resamples": resamples, "seed": seed, "level": confidence, "method": "percentile"}
        if "meteor" in scores:
            metrics_out["bootstrap"]["meteor"] = _NO_METEOR_INTERVAL
    metrics_out["not_run"] = not_run
    metrics_out["conventions"] = conventions
    metrics_out["versions"] = _versions(labeler_version, meteor="meteor" in wanted and "meteor" in scores)
    if neural:
        metrics_out["versions"]["radeval"] = radeval_version
    return Evaluation(metrics_out, _sample_rows(ids, per_report, labels), statistics)


def evaluate_records(records: Iterable[dict[str, str]], clean: str = "none", metrics: str | Iterable[str] | None = None,
                     labeler: Any = "rules", **options: Any) -> dict[str, Any]:
    """Score records and return the metrics dict (top-level headline keys plus all detail).

    ``labeler`` is ``"rules"``, ``"chexbert"`` (with ``labeler_options``
    ``checkpoint`` and ``bert_dir``, optionally ``device`` and
    ``batch_size``) or any object with ``name``, ``version`` and
    ``label(texts)``. Other options: ``radgraph`` (id -> (reference
    annotation, prediction annotation)), ``resamples`` (0 turns intervals
    off), ``seed``, ``confidence``.
    """
    return score_records(records, clean, metrics, labeler, **options).metrics


def evaluate_file(predictions: Path, output: Path, clean: str = "none", metrics: str | Iterable[str] | None = None,
                  labeler: Any = "rules", *, radgraph_annotations: Path | None = None,
                  radgraph_reference: Path | None = None, radgraph_prediction: Path | None = None,
                  **options: Any) -> dict[str, Any]:
    """Score a predictions JSONL file; write metrics JSON, the Markdown table and the per-sample CSV beside it."""
    predictions, output = Path(predictions), Path(output)
    paths = output_paths(output)  # a bad output name fails before the scoring, not after
    inputs = {"--predictions": predictions, "--radgraph-annotations": radgraph_annotations,
              "--radgraph-reference": radgraph_reference, "--radgraph-prediction": radgraph_prediction}
    for path in paths.values():
        atomic.refuse_overwrite(path, inputs)
    records = read_jsonl(predictions, PREDICTION_KEYS)
    if radgraph_annotations is not None and (radgraph_reference or radgraph_prediction):
        raise ValueError("give either --radgraph-annotations or --radgraph-reference/--radgraph-prediction, not both")
    if (radgraph_reference is None) != (radgraph_prediction is None):
        raise ValueError("--radgraph-reference and --radgraph-prediction go together")
    if radgraph_annotations is not None:
        options["radgraph"] = load_paired_annotations(Path(radgraph_annotations))
    elif radgraph_reference is not None:
        options["radgraph"] = load_annotation_files(Path(radgraph_reference), Path(radgraph_prediction))
    evaluation = score_records(records, clean, metrics, labeler, **options)
    evaluation.metrics["source"] = str(predictions)
    write_outputs(evaluation, output)
    return evaluation.metrics


def output_paths(output: Path) -> dict[str, Path]:
    """Where ``evaluate`` writes: the JSON itself, ``<stem>.md`` and ``<stem>.samples.csv`` beside it."""
    output = Path(output)
    if output.suffix.lower() == ".md":
        raise ValueError(f"{output}: the metrics file is JSON; the Markdown table is written beside it as <stem>.md")
    return {
        "json": output,
        "markdown": output.with_name(output.stem + ".md"),
        "samples": output.with_name(output.stem + ".samples.csv"),
    }


def write_outputs(evaluation: Evaluation, output: Path) -> None:
    """The three outputs, each written to a temporary file and renamed (:mod:`s2d_align.atomic`)."""
    paths = output_paths(output)
    atomic.write_json(paths["json"], evaluation.metrics)
    atomic.write_text(paths["markdown"], markdown_report(evaluation.metrics))
    rows = evaluation.samples
    with atomic.atomic_open(paths["samples"], newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- tables

_COLUMNS = (
    ("B@1", "bleu1"), ("B@2", "bleu2"), ("B@3", "bleu3"), ("B@4", "bleu4"), ("MTR", "meteor"),
    ("R-L", "rouge_l"), ("CIDEr", "cider"), ("CE-P", "ce_precision"), ("CE-R", "ce_recall"),
    ("CE-F1", "ce_f1"), ("RG_E", "rg_e"), ("RG_ER", "rg_er"), ("RG_ER-bar", "rg_er_bar"),
    ("BERTScore", "bertscore"), ("SembScore", "semb"), ("RadCliQ-v1", "radcliq_v1"),
    ("1/RadCliQ-v1", "radcliq_v1_inverse"), ("RaTEScore", "ratescore"), ("GREEN", "green"),
)


def format_table(results: dict[str, dict[str, Any]], digits: int = 3) -> str:
    """A Markdown table (aligned for the terminal): one row per named result, a column per metric present."""
    columns = [(title, key) for title, key in _COLUMNS if any(key in r for r in results.values())]
    header = [""] + [title for title, _ in columns]
    rows = [[name] + [f"{r[key]:.{digits}f}" if key in r else "-" for _, key in columns] for name, r in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *[line(row) for row in rows]])


def caption(metrics: dict[str, Any]) -> str:
    """One line that says how the table's numbers were computed."""
    parts = [f"{metrics['n']} reports", f"cleaning {metrics['cleaning']['scheme']}", "pycocoevalcap 1.2"]
    if "ce" in metrics:
        parts.append(f"CE: {metrics['ce']['labeler']}, micro over 14, uncertain positive")
    if "bootstrap" in metrics:
        parts.append(f"{metrics['bootstrap']['level']:.0%} intervals from {metrics['bootstrap']['resamples']} "
                     f"bootstrap resamples (seed {metrics['bootstrap']['seed']})")
    parts += [f"{key} not run" for key in metrics.get("not_run", {})]
    return "; ".join(parts)


def markdown_report(metrics: dict[str, Any], name: str = "model") -> str:
    """The Markdown file written beside ``metrics.json``."""
    parts = [f"# Evaluation: {metrics.get('source', name)}", "", format_table({name: metrics}), "",
             caption(metrics) + ".", ""]
    intervals = metrics.get("confidence_intervals")
    if intervals:
        level = metrics["bootstrap"]["level"]
        parts += [f"{level:.0%} bootstrap intervals ({metrics['bootstrap']['resamples']} resamples, "
                  f"seed {metrics['bootstrap']['seed']}):", "", "| metric | value | interval |", "|---|---:|---:|"]
        for title, key in _COLUMNS:
            if key in intervals:
                low, high = intervals[key]
                parts.append(f"| {title} | {metrics[key]:.3f} | [{low:.3f}, {high:.3f}] |")
        parts.append("")
    ce = metrics.get("ce")
    if ce:
        parts += [f"Clinical efficacy, every convention (labeler: {ce['labeler']}):", "",
                  "| uncertain | averaging | P | R | F1 |", "|---|---|---:|---:|---:|"]
        for policy, by_kind in ce["conventions"].items():
            for kind, v in by_kind.items():
                parts.append(f"| {policy.split('_')[1]} | {kind} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
        parts.append("")
    parts += ["Conventions:", ""]
    parts.append(f"- cleaning: `{metrics['cleaning']['scheme']}` -- {metrics['cleaning']['description']}")
    parts += [f"- {key}: {text}" for key, text in metrics["conventions"].items()]
    for key, reason in metrics.get("not_run", {}).items():
        parts.append(f"- not run: {key} -- {reason}")
    parts.append(f"- versions: {', '.join(f'{k} {v}' for k, v in metrics['versions'].items() if v)}")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- helpers


def check_records(records: list[dict[str, str]]) -> None:
    """Records built in code get the checks ``read_jsonl`` gives files (duplicates, empty references)."""
    if not records:
        raise ValueError("nothing to evaluate: no records")
    seen: set[str] = set()
    empty = []
    for index, record in enumerate(records):
        missing = [k for k in PREDICTION_KEYS if k not in record]
        if missing:
            raise ValueError(f"record {index} lacks {', '.join(missing)}")
        if record["id"] in seen:
            raise ValueError(f"duplicate id {record['id']!r} (record {index})")
        seen.add(record["id"])
        if not record["reference"].strip():
            empty.append(record["id"])
    if empty:
        raise ValueError(f"{len(empty)} record(s) have an empty reference, e.g. {empty[:10]}; "
                         "a report cannot be scored against nothing")


def _nlg_statistics(nlg: Any) -> dict[str, SampleStatistic]:
    """Per-report statistics of the NLG metrics: BLEU's counts, ROUGE-L's and CIDEr-D's values."""
    statistics: dict[str, SampleStatistic] = {}
    if nlg.bleu_statistics is not None:
        for k, key in enumerate(BLEU_KEYS):
            statistics[key] = SampleStatistic(nlg.bleu_statistics, lambda sums, n, k=k: bleu_from_statistics(sums)[..., k])
    for key in ("rouge_l", "cider"):
        if key in nlg.per_sample:
            statistics[key] = mean_of(nlg.per_sample[key])
    return statistics


def _clinical(labels: tuple[list, list], scores: dict[str, float], statistics: dict[str, SampleStatistic]) -> dict:
    """Every CE convention; the headline goes into ``scores``, its TP/FP/FN counts into ``statistics``."""
    reference, prediction = label_matrix(labels[0]), label_matrix(labels[1])
    ce = clinical_efficacy(reference, prediction)
    headline = ce["conventions"]["uncertain_positive"]["micro_14"]
    scores.update(ce_precision=headline["precision"], ce_recall=headline["recall"], ce_f1=headline["f1"])
    flat = counts(reference, prediction, "uncertain_positive").reshape(len(reference), -1)  # (N, 3 * 14)
    for i, key in enumerate(("ce_precision", "ce_recall", "ce_f1")):
        statistics[key] = SampleStatistic(flat, lambda sums, n, i=i: micro(sums.reshape(sums.shape[:-1] + (3, -1)))[i])
    return ce


def _radgraph(ids: list[str], radgraph: dict[str, tuple], scores: dict[str, float],
              statistics: dict[str, SampleStatistic], per_report: dict[str, np.ndarray]) -> None:
    missing = [i for i in ids if i not in radgraph]
    if missing:
        raise ValueError(f"RadGraph annotations are missing for {len(missing)} id(s), e.g. {missing[:10]}; "
                         "annotate every reference and prediction")
    rg = radgraph_scores([(i, *radgraph[i]) for i in ids])
    for key in RG_KEYS:
        scores[key] = float(rg[key].mean())
        statistics[key] = mean_of(rg[key])
        per_report[key] = rg[key]


def _label_both(labeler: Any, references: list[str], predictions: list[str]) -> tuple[list, list]:
    """Label each distinct text once (references repeat across runs, predictions repeat within one)."""
    distinct = list(dict.fromkeys([*references, *predictions]))
    by_text = dict(zip(distinct, labeler.label(distinct)))
    return [by_text[t] for t in references], [by_text[t] for t in predictions]


def _snake(name: str) -> str:
    return re.sub(r"\W+", "_", name.lower()).strip("_")


def _sample_rows(ids: list[str], per_report: dict[str, np.ndarray], labels: tuple[list, list] | None) -> list[dict]:
    order = [k for k in ("bleu4", "rouge_l", "cider", "meteor", *RG_KEYS, *MODEL_KEYS) if k in per_report]
    rows = []
    for i, record_id in enumerate(ids):
        row: dict[str, Any] = {"id": record_id}
        for key in order:
            row[key] = repr(float(per_report[key][i]))
        if labels is not None:
            for side, side_labels in zip(("ref", "pred"), labels):
                for name in OBSERVATIONS:
                    value = side_labels[i][name]
                    row[f"{side}_{_snake(name)}"] = "" if value is None else value
        rows.append(row)
    return rows


def _versions(labeler: str | None, meteor: bool) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import s2d_align

    try:
        coco = version("pycocoevalcap")
    except PackageNotFoundError:  # pragma: no cover - a hard dependency
        coco = None
    out = {
        "s2d_align": s2d_align.__version__,
        "pycocoevalcap": coco,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "labeler": labeler,
    }
    if meteor:
        out["java"] = java_version()
    return out
