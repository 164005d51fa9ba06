"""The model folder: self-contained, movable, loads and reports the same; --merge-lora gives a plain transformers LLM."""

import json
import shutil

import pytest
import torch

from s2d_align.cli import main
from s2d_align.data.manifest import image_path, read_manifest
from s2d_align.training.loop import train


@pytest.fixture(scope="module")
def run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_run")
    train(tiny_world.config("train.stages.s2.lr=0.01", "train.stages.s3.lr=0.01"), out)
    (out / "metrics.json").write_text(json.dumps({"bleu_4": 0.1234, "ce": {"f1": 0.5}}))
    return out


@pytest.fixture(scope="module")
def images(tiny_world):
    return [image_path(tiny_world.manifest, s.images[0]) for s in read_manifest(tiny_world.manifest) if s.split == "test"]


def test_exported_folder_moves_and_reports_the_same(run, images, tmp_path):
    from s2d_align import ReportGenerator

    model = tmp_path / "model"
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "s3"), "--out", str(model),
                 "--copy-base-models", "--merge-lora"]) == 0
    for name in ("config.yaml", "connector.safetensors", "lora/adapter_config.json", "lora/adapter_model.safetensors",
                 "tokenizer/tokenizer_config.json", "preprocessor/preprocessor_config.json", "model.json", "README.md",
                 "base_models/vision/config.json", "base_models/llm/config.json", "merged_llm/config.json"):
        assert (model / name).is_file(), name
    config = (model / "config.yaml").read_text()
    assert "name_or_path: base_models/vision" in config and "name_or_path: base_models/llm" in config
    assert str(tmp_path) not in config.split("data:")[0]  # the model section names nothing outside the folder
    card = (model / "README.md").read_text()
    assert "not for clinical use" in card.lower() and "| bleu_4 | 0.1234 |" in card

    expected = [r.text for r in ReportGenerator.from_pretrained(run / "checkpoints" / "s3").batch(images)]
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(model), str(moved))
    shutil.rmtree(run / "checkpoints" / "s3" / "lora")  # the source is gone too: nothing points back at it
    gen = ReportGenerator.from_pretrained(moved)
    assert [r.text for r in gen.batch(images)] == expected
    assert gen.info["kind"] == "model" and gen.info["stage"] == "s3" and gen.info["path"] == str(moved.resolve())


def test_merged_llm_is_a_plain_transformers_model_with_the_same_logits(tiny_world, tmp_path):
    from transformers import AutoModelForCausalLM

    from s2d_align.models.pretrained import MERGED_DIR, export_model, load_pretrained

    out = tmp_path / "run"
    train(tiny_world.config("train.stages.s2.lr=0.05", "train.stages.s3.lr=0.05"), out)
    model = export_model(out / "checkpoints" / "s3", tmp_path / "model", merge_lora=True)
    built, _, _ = load_pretrained(out / "checkpoints" / "s3")
    merged = AutoModelForCausalLM.from_pretrained(str(model / MERGED_DIR)).eval()
    ids = torch.randint(0, built.tokenizers.llm.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora_logits = built.model.llm(input_ids=ids).logits
        merged_logits = merged(input_ids=ids).logits
        with built.model.llm.disable_adapter():
            plain = built.model.llm(input_ids=ids).logits
    assert not torch.allclose(lora_logits, plain, atol=1e-4)  # LoRA was trained: merging it matters
    torch.testing.assert_close(merged_logits, lora_logits, atol=1e-4, rtol=1e-4)


def test_export_without_copy_names_local_base_models_relative_to_the_folder(run, tmp_path):
    from s2d_align.config import load_config

    model = tmp_path / "deep" / "model"
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "s2"), "--out", str(model)]) == 0
    config = load_config(model / "config.yaml")
    assert not config.model.vision.name_or_path.startswith("/")
    assert (model / config.model.vision.name_or_path / "config.json").is_file()
    assert json.loads((model / "model.json").read_text())["stage"] == "s2"


def test_export_refuses_a_non_empty_folder_and_an_unfinished_checkpoint(run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "s1"), "--out", str(tmp_path / "full")]) == 2
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "new")]) == 2
    assert "not a finished checkpoint" in capsys.readouterr().err


def test_a_failed_export_leaves_no_model_folder(run, tmp_path, monkeypatch):
    from s2d_align.models import card, pretrained

    def broken_card(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(card, "model_card", broken_card)
    with pytest.raises(OSError, match="no space left"):
        pretrained.export_model(run / "checkpoints" / "s2", tmp_path / "model", copy_base_models=True)
    assert list(tmp_path.iterdir()) == []


def test_export_r2gen_still_works(tiny_world, tmp_path):
    out = tmp_path / "annotation.json"
    assert main(["export", "r2gen", "--manifest", str(tiny_world.manifest), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) >= {"train", "val", "test"}


def test_remote_code_is_never_taken_from_the_folder(run, tmp_path, monkeypatch):
    import s2d_align.models.model as model_module
    from s2d_align.models.pretrained import export_model, load_pretrained

    model = export_model(run / "checkpoints" / "s2", tmp_path / "model")
    text = (model / "config.yaml").read_text().replace("trust_remote_code: false", "trust_remote_code: true")
    (model / "config.yaml").write_text(text)
    seen = []
    real = model_module.load_llm

    def spy(name, dtype, trust_remote_code):
        seen.append(trust_remote_code)
        return real(name, dtype, trust_remote_code)

    monkeypatch.setattr(model_module, "load_llm", spy)
    load_pretrained(model)
    load_pretrained(model, trust_remote_code=True)
    assert seen == [False, True]
