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
config names them. The weight format and loading a trained model for use live
on the model side (:mod:`s2d_align.models.pretrained`); this module keeps
only what saving and resuming a run needs.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2d_align import atomic
from s2d_align.config import Config, save_config
from s2d_align.models.pretrained import (  # noqa: F401 - the trainer's checkpoints share the model side's format
    CONNECTOR_FILE,
    LORA_DIR,
    META_FILE,
    load_weights,
    read_meta,
    save_weights,
    versions,
)

STATE_FILE = "trainer_state.pt"
LAST_DIR = "last"


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    meta = {**meta, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    atomic.write_json(directory / META_FILE, meta)


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
