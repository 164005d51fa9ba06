"""Stage checkpoints: what was trained, the resolved config, and metadata.

A stage folder (``checkpoints/s1``) holds::

    connector.safetensors   the connector (shared memory and every adapter)
    lora/                   the LLM's LoRA adapter in PEFT's own format
    config.yaml             the resolved run config
    meta.json               stage, epoch, step, losses, throughput, versions;
                            ``complete: true`` once the stage has finished

and, while the stage runs, ``last/`` with the latest weights plus optimizer
and scheduler state, so an interrupted ``train`` resumes where it stopped.
``meta.json`` is written last: a folder without it was never finished and is
ignored. The frozen encoders and the LLM's own weights are not copied: the
config names them.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from s2d_align import atomic
from s2d_align.config import Config, load_config, save_config

CONNECTOR_FILE = "connector.safetensors"
LORA_DIR = "lora"
META_FILE = "meta.json"
STATE_FILE = "trainer_state.pt"
LAST_DIR = "last"


def versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    import s2d_align

    return {
        "s2d_align": s2d_align.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def save_weights(directory: Path, model) -> None:
    """The trainable parts of ``model`` (an unwrapped :class:`S2DAlign`)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.connector.state_dict().items()}
    save_file(state, str(directory / CONNECTOR_FILE))
    model.llm.save_pretrained(str(directory / LORA_DIR))


def load_weights(directory: Path, model) -> None:
    from peft import load_peft_weights, set_peft_model_state_dict

    model.connector.load_state_dict(load_file(str(directory / CONNECTOR_FILE)))
    lora = load_peft_weights(str(directory / LORA_DIR), device="cpu")
    result = set_peft_model_state_dict(model.llm, lora)
    if result.unexpected_keys:
        raise ValueError(f"{directory / LORA_DIR}: LoRA weights do not fit this model: {result.unexpected_keys[:3]}")


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    meta = {**meta, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    atomic.write_json(directory / META_FILE, meta)


def read_meta(directory: Path) -> dict[str, Any] | None:
    path = directory / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def save_checkpoint(directory: Path, model, config: Config, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # invalid until the new meta lands
    save_weights(directory, model)
    save_config(config, directory / "config.yaml")
    write_meta(directory, meta)


def save_resume_state(directory: Path, model, optimizer, scheduler, state: dict[str, Any]) -> None:
    """Everything an interrupted stage needs to go on: weights, optimizer, scheduler, counters.

    ``meta.json`` is written last and marks the state complete. Each process
    saves its own random state beside it (:func:`save_rng_state`) before.
    """
    last = directory / LAST_DIR
    save_weights(last, model)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, last / STATE_FILE)
    write_meta(last, state)


def begin_resume_state(directory: Path) -> None:
    """Invalidate the previous resume state before its parts are replaced."""
    last = directory / LAST_DIR
    last.mkdir(parents=True, exist_ok=True)
    (last / META_FILE).unlink(missing_ok=True)


def save_rng_state(directory: Path, process_index: int) -> None:
    """This process's random generators (torch CPU and CUDA, Python, NumPy), so that dropout resumes exactly.

    Stored as tensors, ints, floats and strings only, so that :func:`load_rng_state`
    reads it with ``weights_only=True``: a run folder received from someone
    else cannot run code through a pickled object.
    """
    version, python_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }
    with atomic.atomic_open(directory / LAST_DIR / f"rng-{process_index}.pt", "wb") as handle:
        torch.save(states, handle)


def load_rng_state(directory: Path, process_index: int) -> dict[str, Any] | None:
    """The states :func:`save_rng_state` wrote, read with ``weights_only=True`` (no pickled objects run)."""
    import pickle

    path = directory / LAST_DIR / f"rng-{process_index}.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: not a random-state file of this version (it holds objects other than tensors and numbers, "
            f"which are never unpickled); delete {path.parent} to restart the stage from its last checkpoint"
        ) from err


def restore_rng_state(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    python = states["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))


def load_resume_state(directory: Path, model, optimizer, scheduler) -> dict[str, Any] | None:
    last = directory / LAST_DIR
    state = read_meta(last)
    if state is None:
        return None
    load_weights(last, model)
    saved = torch.load(last / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return state


def drop_resume_state(directory: Path) -> None:
    shutil.rmtree(directory / LAST_DIR, ignore_errors=True)


def load_checkpoint(directory: str | Path, overrides=(), trust_remote_code: bool = False, text: bool = True):
    """Rebuild a trained model from a stage folder: ``(Built, Config, meta)``; ``overrides`` apply to its config.

    Remote model code runs only if the caller passes ``trust_remote_code``
    (never because the folder's ``config.yaml`` says so). ``text=False``
    skips the text encoder, which image-only generation never calls.
    """
    from s2d_align.models.model import build_model

    directory = Path(directory)
    meta = read_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"{directory}: not a finished checkpoint (no {META_FILE}); train first")
    config = load_config(directory / "config.yaml", overrides, saved=True)
    built = build_model(config.model, trust_remote_code=trust_remote_code, text=text)
    load_weights(directory, built.model)
    return built, config, meta
