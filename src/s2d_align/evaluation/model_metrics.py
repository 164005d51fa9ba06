"""The model-based report metrics of current papers and the ReXrank leaderboard, computed by RadEval.

``s2d-align evaluate --metrics ...,bertscore,semb`` adds, per report and as
the mean over reports (with bootstrap intervals like every per-report metric):

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

We call RadEval's own classes rather than re-implementing them; the parity
tests compare our numbers with RadEval's functions on the same (tiny, random)
models. Models come from the Hugging Face hub by default (cached as the hub
caches them, so ``HF_HUB_OFFLINE=1`` works on a filled cache) or from a local
folder given as ``--metric-model NAME=PATH``:

- ``bertscore=DIR``: a transformers encoder folder (``config.json``,
  weights, tokenizer); the baseline file is bert-score's for the folder's
  name (so name a local copy of distilroberta-base ``distilroberta-base``).
- ``semb=DIR``: ``config.json`` and tokenizer files of bert-base-uncased and
  the ``chexbert.pth`` checkpoint, in one folder.

Everything a metric needs is checked by :func:`check` before any scoring
starts: an unknown name, the ``metrics`` extra missing, a folder missing its
files, a model too shallow for BERTScore's layer. The names ``radcliq``,
``ratescore`` and ``green`` are recognised but not computed in this version:
asking for them is an error that says so (and ``radgraph`` still needs
annotations; RadGraph F1 by model is not wired either).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

EXTRA = "metrics"
MODEL_METRICS = ("bertscore", "semb")
"""Model-based metrics this version computes (they need ``pip install 's2d-align[metrics]'``)."""
NOT_WIRED = ("radcliq", "ratescore", "green")
"""Recognised names of the field's other model metrics that this version does not compute yet."""

BERTSCORE_MODEL = "distilroberta-base"
BERTSCORE_LAYER = 5
SEMB_REPO = "StanfordAIMI/RRG_scorers"
SEMB_BACKBONE = "bert-base-uncased"
BATCH_SIZE = 64


class MetricSetupError(ValueError):
    """A model metric cannot run as asked (raised before any scoring)."""


@dataclass(frozen=True)
class ModelScore:
    """One model metric on a test set: the per-report values, the mean, and how they were computed."""

    key: str
    per_report: np.ndarray  # (N,)
    convention: str
    version: str

    @property
    def score(self) -> float:
        return float(self.per_report.mean())


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


@contextlib.contextmanager
def _quiet_radeval_import() -> Iterator[None]:
    """Import RadEval without its import-time ``nltk.download("punkt_tab")``.

    ``radeval/utils.py`` downloads NLTK's sentence splitter when the package is
    imported; none of the metrics here uses it, and offline the call only
    prints an error. We make that one call a no-op while importing.
    """
    try:
        import nltk
    except ImportError:
        yield
        return
    original = nltk.download
    nltk.download = lambda *args, **kwargs: True
    try:
        yield
    finally:
        nltk.download = original


def _require_radeval(names: Iterable[str]) -> str:
    try:
        with _quiet_radeval_import():
            import radeval  # noqa: F401
            from radeval.metrics.bertscore._vendor import BERTScorer  # noqa: F401
            from radeval.metrics.f1chexbert import F1CheXbert  # noqa: F401
    except ImportError as err:
        raise MetricSetupError(
            f"metric(s) {', '.join(names)} need the '{EXTRA}' extra: pip install 's2d-align[{EXTRA}]' "
            f"({type(err).__name__}: {err})") from None
    from importlib.metadata import version

    return version("radeval")


def _local(value: str) -> Path | None:
    """A value that names a folder on disk (absolute, ./relative, or existing) rather than a hub id."""
    path = Path(value).expanduser()
    if path.is_absolute() or value.startswith((".", "~")) or path.exists():
        return path
    return None


def _check_folder(name: str, folder: Path, files: tuple[str, ...]) -> None:
    if not folder.is_dir():
        raise MetricSetupError(f"--metric-model {name}={folder}: no such folder")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise MetricSetupError(f"--metric-model {name}={folder}: missing {', '.join(missing)}")


def _layers(config_dir_or_id: str) -> int:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(config_dir_or_id)
    except (OSError, ValueError) as err:
        raise MetricSetupError(f"bertscore model {config_dir_or_id!r} cannot be loaded: {err}") from None
    for attribute in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(config, attribute):
            return int(getattr(config, attribute))
    raise MetricSetupError(f"bertscore model {config_dir_or_id!r}: its config gives no layer count")


def check(names: Iterable[str], models: dict[str, str] | None = None) -> str:
    """Fail now, before any work, if a requested model metric cannot run; returns RadEval's version."""
    names = tuple(names)
    models = dict(models or {})
    unused = [n for n in models if n not in names]
    if unused:
        raise MetricSetupError(f"--metric-model given for {', '.join(unused)}, which is not among --metrics")
    if not names:
        return ""
    version = _require_radeval(names)
    if "bertscore" in names:
        model = models.get("bertscore", BERTSCORE_MODEL)
        folder = _local(model)
        if folder is not None:
            _check_folder("bertscore", folder, ("config.json",))
            baseline = _baseline_path(folder.name)
            if baseline is None:
                raise MetricSetupError(
                    f"--metric-model bertscore={folder}: bert-score has no rescaling baseline for a model named "
                    f"{folder.name!r}; name the folder after the hub model it copies (e.g. {BERTSCORE_MODEL})")
        layers = _layers(str(folder) if folder is not None else model)
        if layers < BERTSCORE_LAYER:
            raise MetricSetupError(
                f"bertscore model {model!r} has {layers} layer(s); BERTScore reads layer {BERTSCORE_LAYER}")
    if "semb" in names and "semb" in models:
        folder = _local(models["semb"])
        if folder is None:
            raise MetricSetupError(
                f"--metric-model semb={models['semb']}: give a local folder (config.json, tokenizer files and "
                f"chexbert.pth); without it SembScore uses {SEMB_REPO}/chexbert.pth from the hub")
        _check_folder("semb", folder, ("config.json", "chexbert.pth"))
    return version


def _baseline_path(model_name: str) -> Path | None:
    from radeval.metrics.bertscore import _vendor

    path = Path(_vendor.__file__).parent / "rescale_baseline" / "en" / f"{model_name}.tsv"
    return path if path.is_file() else None


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bertscore(references: list[str], predictions: list[str], model: str = BERTSCORE_MODEL,
              device: str | None = None) -> ModelScore:
    """Per-report BERTScore F1 (ReXrank's setting: layer 5, no idf, baseline-rescaled)."""
    with _quiet_radeval_import():
        from radeval.metrics.bertscore._vendor import BERTScorer

    folder = _local(model)
    name = folder.name if folder is not None else model
    baseline = _baseline_path(name)
    scorer = BERTScorer(model_type=str(folder) if folder is not None else model, num_layers=BERTSCORE_LAYER,
                        batch_size=BATCH_SIZE, idf=False, lang="en", rescale_with_baseline=True,
                        baseline_path=str(baseline) if baseline else None, device=_device(device))
    values = []
    for start in range(0, len(references), BATCH_SIZE):
        _, _, f1 = scorer.score(cands=predictions[start:start + BATCH_SIZE], refs=references[start:start + BATCH_SIZE],
                                batch_size=BATCH_SIZE)
        values.append(f1.double().numpy())
    convention = (f"RadEval {_radeval_version()} vendored bert_score: model {model}, layer {BERTSCORE_LAYER}, "
                  f"idf off, rescaled with bert-score's en baseline for {name}, F1 per report, mean over reports")
    return ModelScore("bertscore", np.concatenate(values) if values else np.zeros(0), convention, _radeval_version())


def _chexbert_evaluator(folder: Path | None, device: str):
    """RadEval's CheXbert evaluator: from the hub as RadEval loads it, or from a local folder."""
    with _quiet_radeval_import():
        from radeval.metrics.f1chexbert import F1CheXbert
    if folder is None:
        return F1CheXbert(device=device, batch_size=BATCH_SIZE)

    import torch
    from radeval.metrics._chexbert_base import BaseBertLabeler
    from transformers import AutoConfig, BertModel, BertTokenizer

    raw = torch.load(folder / "chexbert.pth", map_location="cpu", weights_only=True)
    state = {k.replace("module.", ""): v for k, v in raw.get("model_state_dict", raw).items()}
    backbone = BertModel(AutoConfig.from_pretrained(folder))
    try:
        labeler = BaseBertLabeler(device=device, backbone=backbone, num_4way_heads=13, state_dict=state)
    except RuntimeError as err:
        raise MetricSetupError(f"{folder / 'chexbert.pth'} does not fit the CheXbert model of "
                               f"{folder / 'config.json'}: {str(err).splitlines()[0]}") from None
    evaluator = F1CheXbert.__new__(F1CheXbert)
    torch.nn.Module.__init__(evaluator)
    evaluator._init_evaluator(model=labeler.eval(), tokenizer=BertTokenizer.from_pretrained(folder), device=device,
                              batch_size=BATCH_SIZE)
    return evaluator


def semb(references: list[str], predictions: list[str], model: str | None = None,
         device: str | None = None) -> ModelScore:
    """Per-report SembScore: cosine of the CheXbert embeddings, as ``semantic_embedding_scores`` computes it."""
    folder = _local(model) if model else None
    evaluator = _chexbert_evaluator(folder, _device(device))
    distinct = list(dict.fromkeys([*references, *predictions]))
    embeddings = dict(zip(distinct, evaluator.get_embeddings(distinct)))
    gt = np.vstack([embeddings[t] for t in references])
    pred = np.vstack([embeddings[t] for t in predictions])
    dot = np.einsum("nd,nd->n", gt, pred)
    norms = np.linalg.norm(gt, axis=1) * np.linalg.norm(pred, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(norms > 0, dot / norms, 0.0)
    source = str(folder) if folder is not None else f"{SEMB_REPO}/chexbert.pth on {SEMB_BACKBONE}"
    convention = (f"RadEval {_radeval_version()} CheXbert ({source}): cosine of the [CLS] embeddings of reference "
                  "and prediction per report (RadCliQ-v1's s_emb), mean over reports")
    return ModelScore("semb", values.astype(float), convention, _radeval_version())


def _radeval_version() -> str:
    from importlib.metadata import version

    return version("radeval")


def score(names: Iterable[str], references: list[str], predictions: list[str], models: dict[str, str] | None = None,
          device: str | None = None) -> dict[str, ModelScore]:
    """Every requested model metric (call :func:`check` first)."""
    models = models or {}
    out: dict[str, ModelScore] = {}
    for name in names:
        if name == "bertscore":
            out[name] = bertscore(references, predictions, models.get(name, BERTSCORE_MODEL), device)
        elif name == "semb":
            out[name] = semb(references, predictions, models.get(name), device)
        else:  # pragma: no cover - check() refuses these
            raise MetricSetupError(f"{name}: not a model metric")
        if not np.all(np.isfinite(out[name].per_report)):
            raise ValueError(f"{name}: non-finite per-report values")
    return out


def describe_not_wired(name: str) -> str:
    return (f"{name} is one of the field's model metrics, but this version of s2d-align does not compute it yet "
            f"(computed: {', '.join(MODEL_METRICS)})")

