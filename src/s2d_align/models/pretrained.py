"""A trained S2D-Align: its weights on disk, loading it back, and the self-contained model folder.

What training produces for a stage (``RUN/checkpoints/s3``) is the trained
part only -- the connector and the LLM's LoRA -- beside the resolved config,
which names the frozen base models by hub id or absolute path. That is
enough to resume or evaluate on the machine that trained it, not to hand the
model to someone else. :func:`export_model` writes a *model folder*::

    MODEL/config.yaml            the resolved config; base models by hub id or
                                 by a path relative to MODEL
    MODEL/connector.safetensors  the connector (SMA: shared memory and adapters)
    MODEL/lora/                  the LoRA adapter in PEFT's own format
    MODEL/tokenizer/             the LLM's tokenizer (pad token included)
    MODEL/preprocessor/          the vision encoder's image-processor settings
    MODEL/model.json             format, stage, source checkpoint, versions
    MODEL/README.md              the model card
    MODEL/base_models/{vision,llm}/   with --copy-base-models
    MODEL/merged_llm/            with --merge-lora: the LLM with LoRA merged,
                                 a plain transformers folder

:func:`load_pretrained` reads either kind of folder. Generation conditions on
the image alone (paper, Eq. 5), so by default the text encoder E_t is not
built at all; remote code runs only when the caller passes
``trust_remote_code=True`` (never because a folder's config says so). The
trainer imports :func:`save_weights`/:func:`load_weights` from here for its
checkpoints; nothing here imports the trainer.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from s2d_align import atomic
from s2d_align.config import load_config, replace, save_config

CONNECTOR_FILE = "connector.safetensors"
LORA_DIR = "lora"
META_FILE = "meta.json"
MODEL_FILE = "model.json"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
PREPROCESSOR_DIR = "preprocessor"
MERGED_DIR = "merged_llm"
FORMAT = "s2d-align-model"


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


# --------------------------------------------------------------------------- weights


def save_weights(directory: Path, model) -> None:
    """The trainable parts of ``model`` (an unwrapped :class:`S2DAlign`): connector and LoRA."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.connector.state_dict().items()}
    save_file(state, str(directory / CONNECTOR_FILE))
    model.llm.save_pretrained(str(directory / LORA_DIR))


def load_weights(directory: Path, model) -> None:
    """Load connector and LoRA into ``model``.

    An image-only model (built without E_t) has a connector with the image
    adapter alone; the saved reference and key-phrase adapters are then
    skipped. Every parameter the model does have must be in the file.
    """
    from peft import load_peft_weights, set_peft_model_state_dict

    saved = load_file(str(directory / CONNECTOR_FILE))
    wanted = model.connector.state_dict().keys()
    missing = [k for k in wanted if k not in saved]
    if missing:
        raise ValueError(f"{directory / CONNECTOR_FILE}: connector weights do not fit this model: missing {missing[:3]}")
    model.connector.load_state_dict({k: saved[k] for k in wanted})
    lora = load_peft_weights(str(directory / LORA_DIR), device="cpu")
    result = set_peft_model_state_dict(model.llm, lora)
    if result.unexpected_keys:
        raise ValueError(f"{directory / LORA_DIR}: LoRA weights do not fit this model: {result.unexpected_keys[:3]}")


def read_meta(directory: Path) -> dict[str, Any] | None:
    path = directory / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --------------------------------------------------------------------------- loading


def is_model_folder(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file()


def _resolve(folder: Path, name_or_path: str) -> str:
    """A base model named relative to ``folder`` becomes an absolute path; a hub id stays as it is."""
    candidate = folder / name_or_path
    if not Path(name_or_path).is_absolute() and candidate.exists():
        return str(candidate.resolve())
    return name_or_path


def load_pretrained(
    directory: str | Path,
    overrides: Sequence[str] = (),
    *,
    trust_remote_code: bool = False,
    text_encoder: bool = False,
):
    """Rebuild a trained model from a model folder or a finished stage checkpoint: ``(Built, Config, info)``.

    ``overrides`` (``generate.num_beams=1``) apply to the saved config.
    ``trust_remote_code`` is the caller's decision alone: no saved config can
    turn it on (:func:`config.load_config` drops the retired key). ``text_encoder`` builds
    E_t too (only training needs it). ``info`` describes what was loaded.
    """
    from s2d_align.models.model import build_model

    directory = Path(directory)
    if is_model_folder(directory):
        info = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
        kind = "model"
    else:
        info = read_meta(directory)
        if info is None:
            raise FileNotFoundError(
                f"{directory}: neither a model folder (no {MODEL_FILE}) nor a finished checkpoint (no {META_FILE})"
            )
        kind = "checkpoint"
    config = load_config(directory / CONFIG_FILE, overrides, saved=True)
    m = config.model
    model_config = replace(
        m,
        vision=replace(m.vision, name_or_path=_resolve(directory, m.vision.name_or_path)),
        text=replace(m.text, name_or_path=_resolve(directory, m.text.name_or_path)),
        llm=replace(m.llm, name_or_path=_resolve(directory, m.llm.name_or_path)),
    )
    config = replace(config, model=model_config)
    built = build_model(model_config, trust_remote_code=trust_remote_code, text_encoder=text_encoder)
    load_weights(directory, built.model)
    if (directory / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        built.tokenizers.llm = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
    if (directory / PREPROCESSOR_DIR).is_dir():
        from transformers import AutoImageProcessor

        from s2d_align.models.vision import ImagePreprocessor

        built.preprocess = ImagePreprocessor(AutoImageProcessor.from_pretrained(str(directory / PREPROCESSOR_DIR)))
    built.model.eval()
    summary = {
        "path": str(directory.resolve()),
        "kind": kind,
        "name": info.get("name", directory.resolve().name),
        "stage": info.get("stage"),
        "connector": m.connector.kind,
        "vision": m.vision.name_or_path,
        "llm": m.llm.name_or_path,
    }
    return built, config, summary


# --------------------------------------------------------------------------- export


def _local(name_or_path: str) -> Path | None:
    path = Path(name_or_path)
    return path.resolve() if path.exists() else None


def _copy_base(name_or_path: str, target: Path) -> None:
    """Copy a local base model folder, or fetch a hub id into ``target`` (huggingface_hub)."""
    local = _local(name_or_path)
    if local is not None:
        shutil.copytree(local, target, dirs_exist_ok=True)
        return
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=name_or_path, local_dir=str(target))


def _name_in_folder(name_or_path: str, out: Path) -> str:
    """How the model folder's config names a base model it does not hold: hub id, or path relative to it."""
    local = _local(name_or_path)
    if local is None:
        return name_or_path
    return os.path.relpath(local, out.resolve())


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    copy_base_models: bool = False,
    merge_lora: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Write the model folder of a finished stage checkpoint (see the module docstring)."""
    from s2d_align.models.card import model_card

    checkpoint, out = Path(checkpoint), Path(out)
    meta = read_meta(checkpoint)
    if meta is None:
        raise FileNotFoundError(f"{checkpoint}: not a finished checkpoint (no {META_FILE}); train first")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new folder")
    built, config, _ = load_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    saved = load_config(checkpoint / CONFIG_FILE, saved=True)  # names as the run gave them (before resolution)
    m = saved.model
    # Written into a temporary sibling folder that becomes OUT only when complete:
    # a failed export leaves no half-written model folder behind.
    with atomic.atomic_folder(out) as staging:
        names = {}
        for role, section in (("vision", m.vision), ("llm", m.llm)):
            if copy_base_models:
                _copy_base(section.name_or_path, staging / "base_models" / role)
                names[role] = f"base_models/{role}"
            else:
                names[role] = _name_in_folder(section.name_or_path, out)
        model_config = replace(
            m,
            vision=replace(m.vision, name_or_path=names["vision"]),
            text=replace(m.text, name_or_path=_name_in_folder(m.text.name_or_path, out)),
            llm=replace(m.llm, name_or_path=names["llm"]),
        )
        save_config(replace(saved, model=model_config), staging / CONFIG_FILE)
        for name in (CONNECTOR_FILE,):
            shutil.copy2(checkpoint / name, staging / name)
        shutil.copytree(checkpoint / LORA_DIR, staging / LORA_DIR)
        built.tokenizers.llm.save_pretrained(str(staging / TOKENIZER_DIR))
        built.preprocess.processor.save_pretrained(str(staging / PREPROCESSOR_DIR))
        if merge_lora:
            merged = built.model.llm.merge_and_unload()
            merged.save_pretrained(str(staging / MERGED_DIR))
            built.tokenizers.llm.save_pretrained(str(staging / MERGED_DIR))
        run = checkpoint.resolve().parent.parent
        metrics_path = run / "metrics.json"
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
        info = {
            "format": FORMAT,
            "format_version": 1,
            "name": out.resolve().name,
            "stage": meta.get("stage"),
            "source_checkpoint": str(checkpoint.resolve()),
            "base_models_copied": copy_base_models,
            "merged_llm": MERGED_DIR if merge_lora else None,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": versions(),
        }
        (staging / "README.md").write_text(model_card(config, meta, info, metrics), encoding="utf-8")
        (staging / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")  # last: marks it complete
    return out
