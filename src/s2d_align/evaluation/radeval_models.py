"""RadEval 2.2.1's metric models, built the way its classes build them -- or from local folders they do not take.

:mod:`s2d_align.evaluation.model_metrics` says what each model metric computes,
checks that it can run and scores; this module says how RadEval's own objects
are brought up, and holds what its wheel needs to import at all:

- its vendored RadGraph imports itself as ``RadEval.*`` (:class:`RadEvalAlias`)
  and its package import calls ``nltk.download`` (:func:`quiet_import`);
- ``F1CheXbert`` and ``CompositeMetric`` load their models from the hub only,
  so a local CheXbert, RadGraph archive folder or BERTScore model is handed in
  by building the evaluator around it (:func:`chexbert_evaluator`) or by
  replacing, for a moment, the names RadEval looks up (:func:`composite_metric`,
  :func:`composite_bertscorer`).

Every loader takes plain arguments (a model id or folder, a device) and
returns RadEval's object unchanged in its settings; nothing here scores.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Iterator

HUB_REPO = "StanfordAIMI/RRG_scorers"
"""Where RadEval's CheXbert checkpoint and RadGraph archives live on the hub."""


class CheckpointMismatch(ValueError):
    """A checkpoint's tensors do not fit the model its config describes (the message names both files)."""


class RadEvalAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import RadEval.x`` with the installed ``radeval.x`` module itself.

    RadEval 2.2.1's vendored RadGraph (``radeval/metrics/radgraph/_vendor``)
    imports itself as ``RadEval.metrics...``, the name of the source folder in
    RadEval's repository; the wheel installs the package as ``radeval``, so on
    a case-sensitive file system those imports fail. Aliasing to the same
    module objects (not a second copy) keeps AllenNLP's registries single.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "RadEval" or name.startswith("RadEval."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("radeval" + spec.name[len("RadEval"):])

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Import RadEval without its import-time ``nltk.download("punkt_tab")``, and with :class:`RadEvalAlias`.

    ``radeval/utils.py`` downloads NLTK's sentence splitter when the package is
    imported; none of our metrics uses it, and offline the call only prints an
    error. We make that one call a no-op while importing.
    """
    if not any(isinstance(finder, RadEvalAlias) for finder in sys.meta_path):
        # first, before the path finder would load the files a second time under the RadEval.* names
        sys.meta_path.insert(0, RadEvalAlias())
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


def version() -> str:
    """The installed RadEval's version (every metric's convention names it)."""
    from importlib.metadata import version as installed

    return installed("radeval")


def baseline_path(model_name: str) -> Path | None:
    """bert-score's English rescaling baseline for a model name, as RadEval vendors it; None when there is none."""
    from radeval.metrics.bertscore import _vendor

    path = Path(_vendor.__file__).parent / "rescale_baseline" / "en" / f"{model_name}.tsv"
    return path if path.is_file() else None


def cuda_index(device: str) -> int:
    """RadGraph's ``cuda`` argument: -1 for the CPU, else the GPU's index."""
    if not device.startswith("cuda"):
        return -1
    return int(device.partition(":")[2] or 0)


@contextlib.contextmanager
def replaced(owner: object, **attributes: object) -> Iterator[None]:
    """``owner``'s attributes replaced for a moment: how we hand RadEval's classes the models we loaded."""
    saved = {name: getattr(owner, name) for name in attributes}
    for name, value in attributes.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


def sha256(path: Path) -> str:
    """The first 12 hex digits of a file's sha256, to name the weights a convention was computed with."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------- the loaders


def bertscorer(model_type: str, baseline_name: str, layer: int, batch_size: int, device: str):
    """RadEval's vendored ``BERTScorer`` without idf, rescaled with bert-score's baseline for ``baseline_name``."""
    with quiet_import():
        from radeval.metrics.bertscore._vendor import BERTScorer

    baseline = baseline_path(baseline_name)
    return BERTScorer(model_type=model_type, num_layers=layer, batch_size=batch_size, idf=False, lang="en",
                      rescale_with_baseline=True, baseline_path=str(baseline) if baseline else None, device=device)


def chexbert_evaluator(folder: Path | None, device: str, batch_size: int):
    """RadEval's CheXbert evaluator: from the hub as RadEval loads it, or from a local folder.

    ``F1CheXbert`` takes no folder, so for one we build RadEval's labeler
    (``BaseBertLabeler``) on the folder's config and ``chexbert.pth`` and hand
    it to the evaluator's own initialiser.
    """
    with quiet_import():
        from radeval.metrics.f1chexbert import F1CheXbert
    if folder is None:
        return F1CheXbert(device=device, batch_size=batch_size)

    import torch
    from radeval.metrics._chexbert_base import BaseBertLabeler
    from transformers import AutoConfig, BertModel, BertTokenizer

    raw = torch.load(folder / "chexbert.pth", map_location="cpu", weights_only=True)
    state = {k.replace("module.", ""): v for k, v in raw.get("model_state_dict", raw).items()}
    backbone = BertModel(AutoConfig.from_pretrained(folder))
    try:
        labeler = BaseBertLabeler(device=device, backbone=backbone, num_4way_heads=13, state_dict=state)
    except RuntimeError as err:
        raise CheckpointMismatch(f"{folder / 'chexbert.pth'} does not fit the CheXbert model of "
                                 f"{folder / 'config.json'}: {str(err).splitlines()[0]}") from None
    evaluator = F1CheXbert.__new__(F1CheXbert)
    torch.nn.Module.__init__(evaluator)
    evaluator._init_evaluator(model=labeler.eval(), tokenizer=BertTokenizer.from_pretrained(folder), device=device,
                              batch_size=batch_size)
    return evaluator


def chexbert_source(folder: Path | None, backbone: str) -> str:
    return str(folder) if folder is not None else f"{HUB_REPO}/chexbert.pth on {backbone}"


def radgraph_source(model: str | Path) -> tuple[dict[str, str], str, Path]:
    """RadGraph's arguments for a model type (a str: the hub archive) or an extracted archive folder (a Path,
    named after its type); the model's name; its weights."""
    from radeval.metrics.radgraph._vendor.core import CACHE_DIR

    if not isinstance(model, Path):
        return {"model_type": model}, f"{model} ({HUB_REPO}/{model}.tar.gz)", Path(CACHE_DIR) / model / "weights.th"
    return {"model_type": model.name, "model_cache_dir": str(model.parent)}, str(model), model / "weights.th"


def radgraph(model: str | Path, device: str):
    """RadEval's vendored RadGraph model (see :func:`radgraph_source`), and its name with its weights' digest."""
    with quiet_import():
        from radeval.metrics.radgraph import RadGraph

    kwargs, source, weights = radgraph_source(model)
    return RadGraph(cuda=cuda_index(device), **kwargs), f"{source}, weights.th sha256:{sha256(weights)}"


def f1radgraph(model: str | Path, device: str):
    """RadEval's ``F1RadGraph`` at every reward level, on the RadGraph model of :func:`radgraph`; and its name."""
    with quiet_import():
        from radeval.metrics.radgraph import F1RadGraph

    kwargs, source, weights = radgraph_source(model)
    scorer = F1RadGraph(reward_level="all", cuda=cuda_index(device), **kwargs)
    return scorer, f"{source}, weights.th sha256:{sha256(weights)}"


def composite_metric(graph, chexbert):
    """RadEval's ``CompositeMetric`` (RadCliQ-v1) built around the RadGraph and CheXbert given, not the hub's."""
    with quiet_import():
        from radeval.metrics.RadCliQv1 import radcliq

    with replaced(radcliq, RadGraph=lambda model_type: graph, F1CheXbert=lambda device: chexbert):
        return radcliq.CompositeMetric()


@contextlib.contextmanager
def composite_bertscorer(model_type: str, baseline: str, device: str) -> Iterator[None]:
    """While open, the ``BERTScorer`` that ``CompositeMetric.predict`` builds is of ``model_type`` on ``device``.

    ``CompositeMetric`` builds its scorer per call, with idf from that call's
    references; its settings (idf, layer, batch) stay its own.
    """
    with quiet_import():
        from radeval.metrics.bertscore import _vendor

    original = _vendor.BERTScorer

    def build(**settings):
        return original(**{**settings, "model_type": model_type, "baseline_path": baseline, "device": device})

    with replaced(_vendor, BERTScorer=build):
        yield


def ratescore(ner: str, embedder: str, device: str):
    """RadEval's ``RaTEScore`` with its NER and embedding models on ``device`` (it knows only "cuda" or "cpu")."""
    import torch

    with quiet_import():
        from radeval.metrics.RaTEScore.scorer import RaTEScore

    scorer = RaTEScore(bert_model=ner, eval_model=embedder, use_gpu=device.startswith("cuda"))
    scorer.device = torch.device(device)
    scorer.model.to(scorer.device)
    scorer.eval_model.to(scorer.device)
    return scorer


def green(model: str):
    """RadEval's ``GREEN`` judge (a hub id or a causal-LM folder); it places the model on cuda:0 itself."""
    with quiet_import():
        from radeval.metrics.green_score.green import GREEN

    return GREEN(model_name=model, output_dir=".", num_gpus=1)
