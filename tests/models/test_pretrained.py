"""A trained model on disk at unit speed: a finished checkpoint written from a freshly built tiny model
(no training: the weights need only be distinct), exported, and loaded back through the same code that
``generate``, ``serve`` and ``export`` use. ``tests/inference/test_export.py`` does it on a trained run."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from s2d_align.models import pretrained
from s2d_align.models.pretrained import (
    CONNECTOR_FILE,
    LORA_DIR,
    MERGED_DIR,
    MODEL_FILE,
    PREPROCESSOR_DIR,
    TOKENIZER_DIR,
    export_model,
    load_pretrained,
    versions,
)


@pytest.fixture(scope="module")
def checkpoint(tiny_world, tmp_path_factory):
    """RUN/checkpoints/s3 of a tiny model whose connector and LoRA are random (LoRA's B too)."""
    from s2d_align.models.model import build_model
    from s2d_align.training.checkpoint import save_checkpoint

    config = tiny_world.config()
    torch.manual_seed(0)
    built = build_model(config.model)
    with torch.no_grad():
        for name, parameter in built.model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    folder = tmp_path_factory.mktemp("run") / "checkpoints" / "s3"
    save_checkpoint(folder, built.model, config, {"stage": "s3", "epoch": 2, "step": 9, "complete": True})
    (folder.parent.parent / "metrics.json").write_text(json.dumps({"bleu_4": 0.25}))
    return folder, built


def _trained(model) -> dict[str, torch.Tensor]:
    state = {f"connector.{k}": v for k, v in model.connector.state_dict().items()}
    state.update({k: v for k, v in model.llm.named_parameters() if "lora_" in k})
    return state


def test_a_checkpoint_loads_back_image_only_with_its_weights(checkpoint):
    folder, built = checkpoint
    loaded, config, info = load_pretrained(folder, ["generate.num_beams=2"])
    assert config.generate.num_beams == 2 and loaded.model.text is None and not loaded.model.training
    assert info == {"path": str(folder.resolve()), "kind": "checkpoint", "name": "s3", "stage": "s3",
                    "connector": "sma", "vision": config.model.vision.name_or_path,
                    "llm": config.model.llm.name_or_path}
    expected = {k: v for k, v in _trained(built.model).items() if ".reference." not in k and ".key_phrases." not in k}
    got = _trained(loaded.model)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)
    with_text, _, _ = load_pretrained(folder, text_encoder=True)
    assert with_text.model.text is not None and set(with_text.model.connector.adapters) == {
        "image", "reference", "key_phrases"}


def test_an_export_is_a_folder_that_moves_and_loads_the_same(checkpoint, tmp_path):
    folder, built = checkpoint
    out = export_model(folder, tmp_path / "exports" / "tiny-s3")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", CONNECTOR_FILE, LORA_DIR, TOKENIZER_DIR, PREPROCESSOR_DIR, MODEL_FILE, "README.md"])
    info = json.loads((out / MODEL_FILE).read_text())
    assert {k: info[k] for k in ("format", "format_version", "name", "stage", "source_checkpoint",
                                  "base_models_copied", "merged_llm", "versions")} == {
        "format": "s2d-align-model", "format_version": 1, "name": "tiny-s3", "stage": "s3",
        "source_checkpoint": str(folder.resolve()), "base_models_copied": False, "merged_llm": None,
        "versions": versions()}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", info["exported_at"])
    assert "| bleu_4 | 0.2500 |" in (out / "README.md").read_text()  # the run's metrics reach the card
    saved = (out / "config.yaml").read_text()
    config = load_pretrained(folder)[1]
    for role in ("vision", "text", "llm"):  # base models named relative to the folder
        relative = os.path.relpath(getattr(config.model, role).name_or_path, out.resolve())
        assert f"name_or_path: {relative}" in saved, role
    moved = tmp_path / "one" / "level" / "deeper" / "tiny-s3"
    moved.parent.mkdir(parents=True)
    out.rename(moved)
    with pytest.raises(ValueError, match="cannot be loaded"):  # the relative names no longer reach the base models
        load_pretrained(moved)
    moved.rename(out)
    loaded, _, loaded_info = load_pretrained(out)
    assert (loaded_info["kind"], loaded_info["name"], loaded_info["stage"]) == ("model", "tiny-s3", "s3")
    assert type(loaded.tokenizers.llm).__name__ == type(built.tokenizers.llm).__name__
    assert loaded.tokenizers.llm.pad_token == built.tokenizers.llm.pad_token
    for key, value in _trained(load_pretrained(folder)[0].model).items():
        torch.testing.assert_close(_trained(loaded.model)[key], value, rtol=0, atol=0)


def test_an_export_with_its_base_models_and_merged_lora_needs_nothing_else(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    folder, _ = checkpoint
    out = export_model(folder, tmp_path / "whole", copy_base_models=True, merge_lora=True)
    assert sorted(p.name for p in (out / "base_models").iterdir()) == ["llm", "vision"]
    info = json.loads((out / MODEL_FILE).read_text())
    assert (info["base_models_copied"], info["merged_llm"]) == (True, MERGED_DIR)
    saved = (out / "config.yaml").read_text()
    assert "name_or_path: base_models/vision" in saved and "name_or_path: base_models/llm" in saved
    moved = tmp_path / "moved"
    out.rename(moved)
    loaded, _, _ = load_pretrained(moved)
    merged = AutoModelForCausalLM.from_pretrained(moved / MERGED_DIR).eval()
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, loaded.model.llm(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


def test_what_is_not_a_trained_model_is_refused(checkpoint, tmp_path):
    folder, _ = checkpoint
    with pytest.raises(FileNotFoundError, match=r"neither a model folder \(no model\.json\) nor a finished "
                                                r"checkpoint \(no meta\.json\)"):
        load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r": not a finished checkpoint \(no meta\.json\); train first$"):
        export_model(tmp_path, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match=r"full: exists and is not empty; choose a new folder$"):
        export_model(folder, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    assert export_model(folder, tmp_path / "empty") == tmp_path / "empty"  # an empty folder is fine


def test_names_and_versions(tmp_path):
    (tmp_path / "models" / "llm").mkdir(parents=True)
    assert pretrained._resolve(tmp_path / "models", "llm") == str((tmp_path / "models" / "llm").resolve())
    assert pretrained._resolve(tmp_path / "models", "lmsys/vicuna-7b-v1.5") == "lmsys/vicuna-7b-v1.5"
    absolute = str(tmp_path / "models" / "llm")
    assert pretrained._resolve(tmp_path / "elsewhere", absolute) == absolute
    out = tmp_path / "exports" / "m"
    assert pretrained._name_in_folder(absolute, out) == os.path.join("..", "..", "models", "llm")
    assert pretrained._name_in_folder("lmsys/vicuna-7b-v1.5", out) == "lmsys/vicuna-7b-v1.5"
    import platform

    import accelerate
    import peft
    import transformers

    import s2d_align

    assert versions() == {"s2d_align": s2d_align.__version__, "python": platform.python_version(),
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "peft": peft.__version__, "accelerate": accelerate.__version__}
