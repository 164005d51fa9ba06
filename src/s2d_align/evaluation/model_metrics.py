"""The model-based report metrics of current papers and the ReXrank leaderboard, computed by RadEval.

``s2d-align evaluate --metrics ...,NAME`` adds, per report and as the mean over
reports (with bootstrap intervals like every per-report metric), for NAME in:

- ``bertscore`` -- BERTScore F1 (Zhang et al., ICLR 2020) as ReXrank and
  RadCliQ-v1 (Yu et al., Patterns 2023; rajpurkarlab/CXR-Report-Metric)
  compute it: ``distilroberta-base``, layer 5, no idf weighting, rescaled
  with bert-score's English baseline for that model. Computed by RadEval's
  vendored ``bert_score`` (``radeval.metrics.bertscore._vendor.BERTScorer``).
- ``semb`` -- SembScore (Yu et al., 2023): cosine of the CheXbert [CLS]
  embeddings of reference and prediction, by RadEval's CheXbert
  (``radeval.metrics.f1chexbert``, ``StanfordAIMI/RRG_scorers/chexbert.pth``
  on bert-base-uncased) and the cosine of
  ``radeval.metrics.RadCliQv1.semb_score``.
- ``radgraph`` (when no RadGraph annotations are given) -- RG_E, RG_ER,
  RG_ER-bar by RadEval's ``F1RadGraph`` (reward levels simple / partial /
  complete) on both sides annotated by RadEval's vendored RadGraph model
  (default ``radgraph-xl``, as RadEval's own ``radgraph`` metric).
- ``radcliq`` -- RadCliQ-v1 by RadEval's ``CompositeMetric``: per report
  (``radcliq_v1``, lower is better) and ``radcliq_v1_inverse`` =
  1 / mean RadCliQ-v1, which is what RadEval returns as its aggregate
  ``radcliq_v1`` and ReXrank prints as "1/RadCliQ-v1".
- ``ratescore`` -- RaTEScore (Zhao et al., EMNLP 2024) by RadEval's
  ``RaTEScore`` (RaTE-NER-Deberta entities, BioLORD-2023-C embeddings).
- ``green`` -- GREEN (Ostmeier et al., 2024) by RadEval's ``GREEN`` with
  ``StanfordAIMI/GREEN-radllama2-7b``; a GPU is required.

We call RadEval's own classes rather than re-implementing them; the parity
tests compare our numbers with RadEval's functions on the same (tiny, random)
models. Models come from the Hugging Face hub by default (cached as the hub
caches them, so ``HF_HUB_OFFLINE=1`` works on a filled cache) or from a local
folder given as ``--metric-model NAME=PATH`` (:data:`LOCAL_LAYOUT`).

Everything a metric needs is checked by :func:`check` before any work
starts: an unknown name, a missing dependency, a folder missing its files, a
model too shallow for BERTScore's layer, GREEN without a GPU. Then
:func:`load` builds every model -- a checkpoint that does not fit its config
fails there -- and only then does scoring begin.

How RadEval's models are built (and what its wheel needs to import) is
:mod:`s2d_align.evaluation.radeval_models`; this module decides which models
and settings each metric uses, and scores.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from s2d_align.evaluation import radeval_models
from s2d_align.evaluation.bootstrap import SampleStatistic, mean_of

EXTRA = "metrics"
MODEL_METRICS = ("bertscore", "semb", "radgraph", "radcliq", "ratescore", "green")
"""Model-based metrics (they need ``pip install 's2d-align[metrics]'``; ``radgraph`` only without annotations)."""
KEYS = {
    "bertscore": ("bertscore",),
    "semb": ("semb",),
    "radgraph": ("rg_e", "rg_er", "rg_er_bar"),
    "radcliq": ("radcliq_v1", "radcliq_v1_inverse"),
    "ratescore": ("ratescore",),
    "green": ("green",),
}
"""The keys each metric writes into ``metrics.json``."""

BERTSCORE_MODEL = "distilroberta-base"
BERTSCORE_LAYER = 5
SEMB_REPO = radeval_models.HUB_REPO
SEMB_BACKBONE = "bert-base-uncased"
RADGRAPH_MODEL = "radgraph-xl"
RADGRAPH_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")
RATESCORE_MODELS = ("Angelakeke/RaTE-NER-Deberta", "FremyCompany/BioLORD-2023-C")
GREEN_MODEL = "StanfordAIMI/GREEN-radllama2-7b"
BATCH_SIZE = 64

LOCAL_LAYOUT = {
    "bertscore": "a transformers encoder folder named after the hub model it copies (distilroberta-base), "
                 "whose name selects bert-score's rescaling baseline",
    "semb": "config.json and tokenizer files of bert-base-uncased, and chexbert.pth",
    "radgraph": "an extracted RadGraph archive (config.json, vocabulary/, weights.th) named after its model type "
                f"({', '.join(RADGRAPH_TYPES)}); or one of those names for the hub archive",
    "radcliq": "radgraph/ (the RadGraph v1 archive, extracted), chexbert/ (as for semb) and distilroberta-base/",
    "ratescore": "RaTE-NER-Deberta/ and BioLORD-2023-C/, transformers folders",
    "green": "a transformers causal-LM folder",
}
"""What ``--metric-model NAME=DIR`` must hold."""
_FILES = {
    "bertscore": ("config.json",),
    "semb": ("config.json", "chexbert.pth"),
    "radgraph": ("config.json", "weights.th", "vocabulary"),
    "radcliq": ("radgraph/config.json", "radgraph/weights.th", "radgraph/vocabulary", "chexbert/config.json",
                "chexbert/chexbert.pth", "distilroberta-base/config.json"),
    "ratescore": ("RaTE-NER-Deberta/config.json", "BioLORD-2023-C/config.json"),
    "green": ("config.json",),
}
_IMPORTS = {
    "bertscore": "radeval.metrics.bertscore._vendor",
    "semb": "radeval.metrics.f1chexbert",
    "radgraph": "radeval.metrics.radgraph",
    "radcliq": "radeval.metrics.RadCliQv1.radcliq",
    "ratescore": "radeval.metrics.RaTEScore.scorer",
    "green": "radeval.metrics.green_score.green",
}


class MetricSetupError(ValueError):
    """A model metric cannot run as asked (raised before any scoring)."""


@dataclass(frozen=True)
class ModelScore:
    """One model metric on a test set: per-report values, the numbers they give, and how they were computed."""

    name: str
    per_report: dict[str, np.ndarray]  # key -> (N,); each key's score is the mean over reports
    convention: str
    inverses: dict[str, str] = field(default_factory=dict)  # key -> the per-report key whose 1 / mean it is

    def statistics(self) -> dict[str, SampleStatistic]:
        out = {key: mean_of(values) for key, values in self.per_report.items()}
        for key, of in self.inverses.items():
            out[key] = SampleStatistic(out[of].values, lambda sums, n: n / sums[..., 0])
        return out

    def scores(self) -> dict[str, float]:
        return {key: statistic.full() for key, statistic in self.statistics().items()}


Scorer = Callable[[list[str], list[str]], ModelScore]
"""A loaded metric: ``scorer(references, predictions)``."""


def parse_metric_models(items: Iterable[str] | None) -> dict[str, str]:
    """``["bertscore=/models/distilroberta-base"]`` -> ``{"bertscore": "/models/distilroberta-base"}``."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise MetricSetupError(f"--metric-model expects NAME=ID_OR_PATH, got {item!r}")
        if name not in MODEL_METRICS:
            raise MetricSetupError(f"--metric-model {name}: no such model metric; choose from {', '.join(MODEL_METRICS)}")
        if name in out:
            raise MetricSetupError(f"--metric-model {name} given twice")
        out[name] = value
    return out


def _require_radeval(names: Iterable[str]) -> str:
    """Import what each metric runs; the error names the metrics that cannot, and what to install."""
    missing: dict[str, str] = {}
    for name in names:
        try:
            with radeval_models.quiet_import():
                importlib.import_module("radeval")
                importlib.import_module(_IMPORTS[name])
        except ImportError as err:
            missing[name] = f"{type(err).__name__}: {err}"
    if missing:
        how = f"pip install 's2d-align[{EXTRA}]'"
        if "ratescore" in missing:
            how += " and pip install --no-deps medspacy==1.3.1 (for ratescore)"
        raise MetricSetupError(f"metric(s) {', '.join(missing)} need the '{EXTRA}' extra: {how} "
                               f"({'; '.join(dict.fromkeys(missing.values()))})") from None
    return radeval_models.version()


def _local(value: str) -> Path | None:
    """A value that names a folder on disk (absolute, ./relative, or existing) rather than a hub id."""
    path = Path(value).expanduser()
    if path.is_absolute() or value.startswith((".", "~")) or path.exists():
        return path
    return None


def _check_folder(name: str, folder: Path, files: tuple[str, ...]) -> None:
    if not folder.is_dir():
        raise MetricSetupError(f"--metric-model {name}={folder}: no such folder")
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise MetricSetupError(f"--metric-model {name}={folder}: missing {', '.join(missing)} "
                               f"(it must hold {LOCAL_LAYOUT[name]})")


def _layers(name: str, config_dir_or_id: str) -> int:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(config_dir_or_id)
    except (OSError, ValueError) as err:
        raise MetricSetupError(f"{name}: BERTScore model {config_dir_or_id!r} cannot be loaded: {err}") from None
    for attribute in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(config, attribute):
            return int(getattr(config, attribute))
    raise MetricSetupError(f"{name}: BERTScore model {config_dir_or_id!r}: its config gives no layer count")


def _check_bertscore_model(name: str, model: str) -> None:
    layers = _layers(name, model)
    if layers < BERTSCORE_LAYER:
        raise MetricSetupError(f"{name}: BERTScore model {model!r} has {layers} layer(s); "
                               f"BERTScore reads layer {BERTSCORE_LAYER}")


def _check_gpu(device: str | None) -> None:
    import torch

    if not torch.cuda.is_available():
        raise MetricSetupError("green: GREEN needs a GPU (CUDA), and this machine has none; RadEval runs its 7B "
                               f"judge ({GREEN_MODEL}) in float16 on cuda:0 and we do not run it on a CPU")
    if device is not None and device not in ("cuda", "cuda:0"):
        raise MetricSetupError(f"green: GREEN needs a GPU and runs on cuda:0 (RadEval's GREEN places it there); "
                               f"--metric-device {device} cannot be honoured: choose the GPU with CUDA_VISIBLE_DEVICES")


def check(names: Iterable[str], models: dict[str, str] | None = None, device: str | None = None) -> str:
    """Fail now, before any work, if a requested model metric cannot run; returns RadEval's version."""
    names = tuple(names)
    models = dict(models or {})
    unused = [n for n in models if n not in names]
    if unused:
        raise MetricSetupError(f"--metric-model given for {', '.join(unused)}, which is not among --metrics")
    if not names:
        return ""
    if "green" in names:
        _check_gpu(device)
    version = _require_radeval(names)
    for name in names:
        value = models.get(name)
        folder = _local(value) if value else None
        if folder is not None:
            _check_folder(name, folder, _FILES[name])
        elif value is not None and name in ("semb", "radcliq", "ratescore"):
            raise MetricSetupError(f"--metric-model {name}={value}: give a local folder holding {LOCAL_LAYOUT[name]}; "
                                   f"without --metric-model {name} its models come from the hub")
    if "bertscore" in names:
        model = models.get("bertscore", BERTSCORE_MODEL)
        folder = _local(model)
        if folder is not None and radeval_models.baseline_path(folder.name) is None:
            raise MetricSetupError(
                f"--metric-model bertscore={folder}: bert-score has no rescaling baseline for a model named "
                f"{folder.name!r}; name the folder after the hub model it copies (e.g. {BERTSCORE_MODEL})")
        _check_bertscore_model("bertscore", model)
    if "radcliq" in names:
        folder = _local(models["radcliq"]) if "radcliq" in models else None
        _check_bertscore_model("radcliq", str(folder / BERTSCORE_MODEL) if folder else BERTSCORE_MODEL)
    if "radgraph" in names:
        value = models.get("radgraph", RADGRAPH_MODEL)
        kind = _local(value).name if _local(value) else value
        if kind not in RADGRAPH_TYPES:
            raise MetricSetupError(f"--metric-model radgraph={value}: RadGraph model types are "
                                   f"{', '.join(RADGRAPH_TYPES)}; a local folder is named after its type")
    return version


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- the scorers


def _bertscore_scorer(model: str | None, device: str) -> Scorer:
    model = model or BERTSCORE_MODEL
    folder = _local(model)
    name = folder.name if folder is not None else model
    scorer = radeval_models.bertscorer(str(folder) if folder is not None else model, name, BERTSCORE_LAYER,
                                       BATCH_SIZE, device)
    convention = (f"RadEval {radeval_models.version()} vendored bert_score: model {model}, layer {BERTSCORE_LAYER}, "
                  f"idf off, rescaled with bert-score's en baseline for {name}, F1 per report, mean over reports")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        values = []
        for start in range(0, len(references), BATCH_SIZE):
            _, _, f1 = scorer.score(cands=predictions[start:start + BATCH_SIZE],
                                    refs=references[start:start + BATCH_SIZE], batch_size=BATCH_SIZE)
            values.append(f1.double().numpy())
        return ModelScore("bertscore", {"bertscore": np.concatenate(values) if values else np.zeros(0)}, convention)

    return run


def _chexbert(folder: Path | None, device: str):
    try:
        return radeval_models.chexbert_evaluator(folder, device, BATCH_SIZE)
    except radeval_models.CheckpointMismatch as err:
        raise MetricSetupError(str(err)) from None


def _semb_scorer(model: str | None, device: str) -> Scorer:
    folder = _local(model) if model else None
    evaluator = _chexbert(folder, device)
    convention = (f"RadEval {radeval_models.version()} CheXbert ({radeval_models.chexbert_source(folder, SEMB_BACKBONE)}): "
                  "cosine of the [CLS] embeddings of reference and prediction per report (RadCliQ-v1's s_emb), "
                  "mean over reports")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        distinct = list(dict.fromkeys([*references, *predictions]))
        embeddings = dict(zip(distinct, evaluator.get_embeddings(distinct)))
        gt = np.vstack([embeddings[t] for t in references])
        pred = np.vstack([embeddings[t] for t in predictions])
        dot = np.einsum("nd,nd->n", gt, pred)
        norms = np.linalg.norm(gt, axis=1) * np.linalg.norm(pred, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(norms > 0, dot / norms, 0.0)
        return ModelScore("semb", {"semb": values.astype(float)}, convention)

    return run


def _radgraph_scorer(model: str | None, device: str) -> Scorer:
    value = model or RADGRAPH_MODEL
    scorer, source = radeval_models.f1radgraph(_local(value) or value, device)
    convention = (f"RadEval {radeval_models.version()} F1RadGraph (vendored radgraph 0.1.18), reward levels simple / "
                  "partial / complete = RG_E / RG_ER / RG_ER-bar, both sides annotated by the RadGraph model "
                  f"{source}; per-report F1 (0 when either report is empty or has no entity), mean over reports")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        _, rewards, _, _ = scorer(refs=references, hyps=predictions)
        return ModelScore("radgraph", {k: np.asarray(v, dtype=float) for k, v in zip(KEYS["radgraph"], rewards)},
                          convention)

    return run


def _radcliq_scorer(model: str | None, device: str) -> Scorer:
    """RadEval's ``CompositeMetric``, handed the RadGraph v1, CheXbert and distilroberta-base we load."""
    folder = _local(model) if model else None
    graph, graph_source = radeval_models.radgraph(folder / "radgraph" if folder else "radgraph", device)
    chexbert_folder = folder / "chexbert" if folder else None
    chexbert = _chexbert(chexbert_folder, device)
    bert = str(folder / BERTSCORE_MODEL) if folder else BERTSCORE_MODEL
    baseline = str(radeval_models.baseline_path(BERTSCORE_MODEL))
    metric = radeval_models.composite_metric(graph, chexbert)
    convention = (f"RadEval {radeval_models.version()} CompositeMetric (RadCliQ-v1, rajpurkarlab/CXR-Report-Metric): "
                  "its StandardScaler and linear weights over RadGraph (entity F1 + relation F1) / 2 by the "
                  f"RadGraph model {graph_source}; BERTScore F1 of {bert}, layer {BERTSCORE_LAYER}, idf from this "
                  f"test set's references, baseline-rescaled; SembScore by CheXbert "
                  f"({radeval_models.chexbert_source(chexbert_folder, SEMB_BACKBONE)}); BLEU-2. radcliq_v1: per "
                  "report (lower is better), mean over reports; radcliq_v1_inverse: 1 / that mean (RadEval's "
                  "aggregate 'radcliq_v1', ReXrank's '1/RadCliQ-v1')")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        with radeval_models.composite_bertscorer(bert, baseline, device):
            _, per_report = metric.predict(references, predictions)
        return ModelScore("radcliq", {"radcliq_v1": np.asarray(per_report, dtype=float)}, convention,
                          {"radcliq_v1_inverse": "radcliq_v1"})

    return run


def _ratescore_scorer(model: str | None, device: str) -> Scorer:
    folder = _local(model) if model else None
    ner, embedder = (str(folder / m.split("/")[-1]) for m in RATESCORE_MODELS) if folder else RATESCORE_MODELS
    scorer = radeval_models.ratescore(ner, embedder, device)
    convention = (f"RadEval {radeval_models.version()} RaTEScore: entities by {ner} (sentences split by medspaCy's "
                  f"PyRuSH, batch 1), their [CLS] embeddings by {embedder}, the 'long' affinity matrix; per report "
                  "the F1 of RaTEScore's weighted precision and recall (0.5 when either side has no entity), "
                  "mean over reports")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        values, _, _ = scorer.compute_score(candidate_list=predictions, reference_list=references)
        return ModelScore("ratescore", {"ratescore": np.asarray(values, dtype=float)}, convention)

    return run


def _green_scorer(model: str | None, device: str) -> Scorer:
    model = model or GREEN_MODEL
    scorer = radeval_models.green(str(_local(model) or model))
    convention = (f"RadEval {radeval_models.version()} GREEN: {model} in float16 on cuda:0, greedy decoding, max "
                  f"length {scorer.max_length}, batch {scorer.batch_size}; per report matched findings / (matched "
                  "findings + clinically significant errors), 0 when nothing matched; mean over reports")

    def run(references: list[str], predictions: list[str]) -> ModelScore:
        _, _, values, _ = scorer(references, predictions)
        unparsed = [i for i, v in enumerate(values) if v is None]
        if unparsed:
            raise ValueError(f"green: GREEN could not parse its judge's answer for {len(unparsed)} report(s), "
                             f"e.g. rows {unparsed[:10]}")
        return ModelScore("green", {"green": np.asarray(values, dtype=float)}, convention)

    return run


_SCORERS: dict[str, Callable[[str | None, str], Scorer]] = {
    "bertscore": _bertscore_scorer, "semb": _semb_scorer, "radgraph": _radgraph_scorer,
    "radcliq": _radcliq_scorer, "ratescore": _ratescore_scorer, "green": _green_scorer,
}


def load(names: Iterable[str], models: dict[str, str] | None = None, device: str | None = None) -> dict[str, Scorer]:
    """Every requested metric's models, loaded before any scoring (call :func:`check` first)."""
    models = models or {}
    device = _device(device)
    out = {}
    for name in names:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # RadEval's loaders print; stdout is for our tables
                out[name] = _SCORERS[name](models.get(name), device)
        except MetricSetupError:
            raise
        except Exception as err:  # a model that cannot be loaded, whatever the library raises
            where = f"--metric-model {name}={models[name]}" if name in models else f"{name} (its default models)"
            raise MetricSetupError(f"{where}: the model cannot be loaded: {type(err).__name__}: "
                                   f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err
    return out


def run(scorers: dict[str, Scorer], references: list[str], predictions: list[str]) -> dict[str, ModelScore]:
    """Each loaded metric on the reports."""
    out = {}
    for name, scorer in scorers.items():
        with contextlib.redirect_stdout(sys.stderr):
            out[name] = scorer(references, predictions)
        for key, values in out[name].per_report.items():
            if len(values) != len(references) or not np.all(np.isfinite(values)):
                raise ValueError(f"{name}: {key} is not one finite value per report")
    return out


def score(names: Iterable[str], references: list[str], predictions: list[str], models: dict[str, str] | None = None,
          device: str | None = None) -> dict[str, ModelScore]:
    """Every requested model metric: :func:`load`, then :func:`run` (call :func:`check` first)."""
    return run(load(names, models, device), references, predictions)


def bertscore(references: list[str], predictions: list[str], model: str = BERTSCORE_MODEL,
              device: str | None = None) -> ModelScore:
    """Per-report BERTScore F1 (ReXrank's setting: layer 5, no idf, baseline-rescaled)."""
    return _bertscore_scorer(model, _device(device))(references, predictions)


def semb(references: list[str], predictions: list[str], model: str | None = None,
         device: str | None = None) -> ModelScore:
    """Per-report SembScore: cosine of the CheXbert embeddings, as ``semantic_embedding_scores`` computes it."""
    return _semb_scorer(model, _device(device))(references, predictions)

