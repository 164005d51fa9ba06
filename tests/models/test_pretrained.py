"""A trained model on disk at unit speed: a finished checkpoint written from a freshly built tiny model
(no training: the weights need only be distinct), exported, and loaded back through the same code that
``generate``, ``serve`` and ``export`` use. ``tests/inference/test_export.py`` does it on a trained run."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from s2d_align.config import load_config
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
from tests.conftest import plant_remote_code, trained_state


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


def _image_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What an image-only model holds of a trained state: no reference or key-phrase adapter."""
    return {k: v for k, v in state.items() if ".reference." not in k and ".key_phrases." not in k}


def _assert_same_weights(model, built) -> None:
    got, expected = trained_state(model), _image_only(trained_state(built.model))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_a_checkpoint_loads_back_image_only_with_its_weights(checkpoint):
    folder, built = checkpoint
    loaded, config, info = load_pretrained(folder, ["generate.num_beams=3"])
    assert config.generate.num_beams == 3 and loaded.model.text is None and not loaded.model.training
    assert info == {"path": str(folder.resolve()), "kind": "checkpoint", "name": "s3", "stage": "s3",
                    "connector": "sma", "vision": config.model.vision.name_or_path,
                    "llm": config.model.llm.name_or_path}
    _assert_same_weights(loaded.model, built)
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
    assert (out / MODEL_FILE).read_text().startswith('{\n  "format": "s2d-align-model",\n')
    saved = (out / "config.yaml").read_text()
    config = load_config(folder / "config.yaml", saved=True)  # the run named its base models by absolute path
    for role in ("vision", "text", "llm"):  # base models named relative to the folder
        relative = os.path.relpath(getattr(config.model, role).name_or_path, out.resolve())
        assert f"name_or_path: {relative}" in saved, role
    moved = tmp_path / "one" / "level" / "deeper" / "tiny-s3"
    moved.parent.mkdir(parents=True)
    out.rename(moved)
    with pytest.raises(ValueError, match="cannot be loaded"):  # the relative names no longer reach the base models
        load_pretrained(moved)
    renamed = out.parent / "renamed"  # at the same depth the relative names still reach them
    moved.rename(renamed)
    loaded, _, loaded_info = load_pretrained(renamed)
    assert (loaded_info["kind"], loaded_info["name"], loaded_info["stage"]) == ("model", "tiny-s3", "s3")
    from PIL import Image

    image = Image.new("L", (70, 90), 100)
    torch.testing.assert_close(loaded.preprocess([image]), built.preprocess([image]), rtol=0, atol=0)
    assert load_pretrained(renamed, text_encoder=True)[0].model.text is not None  # E_t's name resolved too
    assert type(loaded.tokenizers.llm).__name__ == type(built.tokenizers.llm).__name__
    assert loaded.tokenizers.llm.pad_token == built.tokenizers.llm.pad_token
    _assert_same_weights(loaded.model, built)


def test_an_export_with_its_base_models_and_merged_lora_needs_nothing_else(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    assert AutoTokenizer.from_pretrained(moved / MERGED_DIR).pad_token == loaded.tokenizers.llm.pad_token
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, loaded.model.llm(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


def test_an_export_without_metrics_and_a_saved_config_with_a_retired_key(checkpoint, tmp_path):
    import shutil

    import yaml

    folder, _ = checkpoint
    copy = tmp_path / "run" / "checkpoints" / "s3"  # a run folder without metrics.json
    shutil.copytree(folder, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["model"]["text"]["trust_remote_code"] = True  # what older versions wrote: ignored, never obeyed
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    out = export_model(copy, tmp_path / "out")
    assert "No `metrics.json` was found in the run folder" in (out / "README.md").read_text()
    assert "trust_remote_code" not in (out / "config.yaml").read_text()


def test_a_saved_config_cannot_make_a_folder_run_its_code(checkpoint, tiny_world, tmp_path):
    import shutil

    import yaml

    from s2d_align.models.loading import ModelLoadError

    folder, _ = checkpoint
    llm, marker = tmp_path / "llm", tmp_path / "ran"
    shutil.copytree(tiny_world.models["llm"], llm)
    plant_remote_code(llm, marker, "Llama", "ForCausalLM", "AutoModelForCausalLM")
    copy = tmp_path / "checkpoint"
    shutil.copytree(folder, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["model"]["llm"]["name_or_path"] = str(llm)
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ModelLoadError):
        load_pretrained(copy)
    with pytest.raises(ModelLoadError):
        export_model(copy, tmp_path / "out")
    assert not marker.exists()


def test_weights_that_do_not_fit_are_refused_by_file(checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _ = checkpoint
    copy = tmp_path / "s3"
    shutil.copytree(folder, copy)
    connector = load_file(copy / CONNECTOR_FILE)
    save_file({k: v for k, v in connector.items() if k != "memory"}, copy / CONNECTOR_FILE)
    with pytest.raises(ValueError) as raised:
        load_pretrained(copy)
    assert str(raised.value) == f"{copy / CONNECTOR_FILE}: connector weights do not fit this model: missing ['memory']"
    save_file(connector, copy / CONNECTOR_FILE)
    lora = load_file(copy / LORA_DIR / "adapter_model.safetensors")
    extra = "base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight"
    save_file({**lora, extra: torch.zeros(1)}, copy / LORA_DIR / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(copy / LORA_DIR))}: LoRA weights do not fit this model: "):
        load_pretrained(copy)


def test_base_models_are_copied_from_folders_or_fetched_by_hub_id(tmp_path, monkeypatch):
    import huggingface_hub

    source = tmp_path / "source" / "nested"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    pretrained._copy_base(str(source), tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "config.json").read_text() == "{}"
    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: fetched.append(kwargs))
    pretrained._copy_base("org/model", tmp_path / "hub")
    assert fetched == [{"repo_id": "org/model", "local_dir": str(tmp_path / "hub")}]


def test_weights_go_to_nested_folders(checkpoint, tmp_path):
    _, built = checkpoint
    pretrained.save_weights(tmp_path / "a" / "b", built.model)
    assert (tmp_path / "a" / "b" / CONNECTOR_FILE).is_file() and (tmp_path / "a" / "b" / LORA_DIR).is_dir()


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
    import s2d_align

    recorded = versions()  # what model.json and meta.json record
    assert set(recorded) == {"s2d_align", "python", "torch", "transformers", "peft", "accelerate"}
    assert (recorded["s2d_align"], recorded["torch"]) == (s2d_align.__version__, torch.__version__)
