"""Shared fixtures: a small synthetic manifest and tiny random base models, built once per session.

Nothing here touches the network: the base models are random ``transformers``
models saved with ``save_pretrained`` and loaded back through the real
``from_pretrained`` code path.
"""

from __future__ import annotations

import contextlib
import os

# No test may reach a model hub: with the hub offline, a hub id fails at once instead of
# retrying an unreachable network (set before huggingface_hub reads it at import).
os.environ["HF_HUB_OFFLINE"] = "1"

import threading

from tqdm import tqdm

# tqdm's default lock is a multiprocessing semaphore that every process forked from one parent shares: a
# forked test run that dies holding it (a progress bar failing mid-refresh, as mutation testing makes them,
# benchmarks/mutation.sh) would hang every later fork. The tests draw bars from one process: a thread lock.
tqdm.set_lock(threading.RLock())

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2d_align.config import Config, load_config
from s2d_align.data.manifest import KeyPhrase, Study, write_manifest
from s2d_align.models.tiny import TinySizes, build_tiny_models

SENTENCES = [
    "The lungs are clear.",
    "There is a small left pleural effusion.",
    "Mild cardiomegaly is present.",
    "No pneumothorax is seen.",
    "Right lower lobe opacity may represent atelectasis.",
    "Heart size is normal.",
]
PHRASES = ["small left pleural effusion", "mild cardiomegaly", "right lower lobe opacity", "clear lungs"]
TEST_SIZES = TinySizes(
    image_size=56, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, text_vocab=200,
    llm_hidden=64, llm_layers=2, llm_heads=4, llm_vocab=300, max_positions=256, llm_pretrain_steps=0,
)


def write_synthetic_manifest(root: Path, patients: int = 12, seed: int = 0) -> Path:
    """Two studies per patient; the second references the first; splits by patient (8/2/2 of 12)."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    studies = []
    for p in range(patients):
        split = "train" if p < patients * 2 // 3 else ("val" if p < patients * 5 // 6 else "test")
        for k in range(2):
            sid = f"p{p}_s{k}"
            pixels = np.random.default_rng(seed * 1000 + p * 10 + k).integers(0, 255, (64, 64), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{sid}.png")
            studies.append(
                Study(
                    id=sid,
                    split=split,
                    subject_id=f"p{p}",
                    study_id=sid,
                    images=(f"images/{sid}.png",),
                    findings=" ".join(rng.sample(SENTENCES, 3)),
                    study_time=f"2020-01-0{k + 1}T10:00:00",
                    reference_id=f"p{p}_s0" if k == 1 else None,
                    key_phrases=tuple(KeyPhrase(t, "test") for t in rng.sample(PHRASES, 2)),
                    labels={"Cardiomegaly": 1},
                )
            )
    return write_manifest(root / "manifest.jsonl", studies) and root / "manifest.jsonl"


@dataclass
class TinyWorld:
    root: Path
    manifest: Path
    models: dict[str, Path]

    def config(self, *overrides: str) -> Config:
        return load_config(
            None,
            [
                f"model.vision.name_or_path={self.models['vision']}",
                f"model.text.name_or_path={self.models['text']}",
                "model.text.max_length=32",
                f"model.llm.name_or_path={self.models['llm']}",
                "model.llm.dtype=float32",
                "model.lora.r=4",
                "model.lora.alpha=8",
                "model.lora.dropout=0.0",
                "model.connector.num_memory=4",
                "model.connector.memory_dim=16",
                "model.connector.hidden_size=32",
                "model.connector.num_heads=2",
                "model.connector.dropout=0.0",
                f"data.manifest={self.manifest}",
                "data.max_report_tokens=48",
                "train.batch_size=4",
                "train.eval_batch_size=4",
                "train.mixed_precision=no",
                "train.stages.s1.epochs=1",
                "train.stages.s2.epochs=1",
                "train.stages.s3.epochs=1",
                "train.stages.s1.warmup_steps=0",
                "train.stages.s2.warmup_steps=0",
                "train.stages.s3.warmup_steps=0",
                "generate.num_beams=2",
                "generate.max_new_tokens=8",
                "generate.batch_size=3",
                *overrides,
            ],
        )


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    root = tmp_path_factory.mktemp("tiny_world")
    manifest = write_synthetic_manifest(root)
    models = build_tiny_models(root / "base_models", manifest, seed=0, sizes=TEST_SIZES)
    return TinyWorld(root, manifest, models)


@pytest.fixture(scope="session")
def tiny_built(tiny_world):
    from s2d_align.models.model import build_model
    import torch

    torch.manual_seed(0)
    return build_model(tiny_world.config().model)


@pytest.fixture(scope="session")
def standins(tmp_path_factory) -> dict[str, Path]:
    """Real-shaped random Rad-DINO, CXR-BERT-specialized and Vicuna-7B v1.5 (2 layers) in hub layouts.

    Built once per session under pytest's temporary folder (about 2 GB on disk), never committed.
    """
    from s2d_align.models.standins import build_standins

    return build_standins(tmp_path_factory.mktemp("standins"), llm_layers=2, seed=0)


REMOTE_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import {base}Config, {base}{head}
class EvilConfig({base}Config):
    model_type = {model_type!r}
class EvilModel({base}{head}):
    config_class = EvilConfig
"""


def plant_remote_code(folder: Path, marker: Path, base: str, head: str, auto: str, model_type: str = "evil-net") -> None:
    """Make ``folder`` (which holds a ``config.json``) name its own classes through ``auto_map``.

    ``evil.py`` subclasses transformers' ``{base}Config`` and ``{base}{head}`` and writes ``marker`` when
    it is imported, so a test sees whether a loader ran code from the folder."""
    import json

    (folder / "evil.py").write_text(REMOTE_CODE.format(marker=str(marker), base=base, head=head,
                                                       model_type=model_type))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, architectures=["EvilModel"],
                  auto_map={"AutoConfig": "evil.EvilConfig", auto: "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))


def trained_state(model) -> dict:
    """Copies of what a stage trains and a checkpoint stores: connector tensors and LoRA parameters."""
    state = {f"connector.{k}": v.detach().clone() for k, v in model.connector.state_dict().items()}
    state.update({k: v.detach().clone() for k, v in model.llm.named_parameters() if "lora_" in k})
    return state


@contextlib.contextmanager
def interrupted_after_evaluation(monkeypatch, n: int):
    """A block in which training is killed (``KeyboardInterrupt``) right after its ``n``-th evaluation saved its state.

    The block must be interrupted so; afterwards the trainer is whole again.
    """
    from s2d_align.training import loop

    real = loop._evaluate_and_track
    calls = {"n": 0}

    def crash(*args, **kwargs):
        stop = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(loop, "_evaluate_and_track", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(loop, "_evaluate_and_track", real)


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """transformers' cosine-with-warm-up factor after ``step`` optimizer steps: linear up, then half a cosine to 0."""
    import math

    if step < warmup:
        return step / warmup
    return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
