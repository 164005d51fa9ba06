"""Base-model loading at real shape: CXR-BERT without remote code, remote code only on request, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2d_align.config import ConfigError, load_config
from s2d_align.models.llm import load_llm
from s2d_align.models.loading import ModelLoadError
from s2d_align.models.text import load_text_encoder
from s2d_align.models.vision import load_vision_encoder

EVIL = '''from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import BertConfig, BertModel
class EvilConfig(BertConfig):
    model_type = "cxr-bert"
class EvilModel(BertModel):
    config_class = EvilConfig
'''


def _link_folder(source: Path, target: Path, skip=()) -> Path:
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name not in skip:
            (target / item.name).symlink_to(item)
    return target


def _fixed_reference(text_folder: Path, target: Path) -> Path:
    """The standin folder with the *fixed* published remote code (``@dataclass`` on ``CXRBertOutput``)."""
    folder = _link_folder(text_folder, target, skip=("modeling_cxrbert.py",))
    code = (text_folder / "modeling_cxrbert.py").read_text()
    code = code.replace("from typing import", "from dataclasses import dataclass\nfrom typing import", 1)
    code = code.replace("class CXRBertOutput(ModelOutput):", "@dataclass\nclass CXRBertOutput(ModelOutput):", 1)
    code = code.replace("    last_hidden_state: torch.FloatTensor\n", "    last_hidden_state: torch.FloatTensor = None\n", 1)
    code = code.replace("    logits: torch.FloatTensor\n", "    logits: torch.FloatTensor = None\n", 1)
    (folder / "modeling_cxrbert.py").write_text(code)
    return folder


def test_cxr_bert_loads_as_plain_bert_equal_to_cxrbertmodel(standins, tmp_path):
    from transformers import AutoModel, BertModel

    encoder, tokenizer = load_text_encoder(str(standins["text"]))
    assert type(encoder.model) is BertModel and encoder.hidden_size == 768
    assert encoder.model.config.vocab_size == 30522 and len(tokenizer) == 30522
    reference = AutoModel.from_pretrained(_fixed_reference(standins["text"], tmp_path / "fixed"), trust_remote_code=True)
    assert type(reference).__name__ == "CXRBertModel"
    reference.eval()
    batch = tokenizer(["There is a small left pleural effusion.", "No pneumothorax."], padding=True, return_tensors="pt")
    ours = encoder(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert ours.shape == (2, batch["input_ids"].shape[1], 768)
    assert torch.equal(ours, theirs)
    assert tokenizer.tokenize("pleural effusion") == ["pleural", "effusion"]


def test_old_remote_code_fails_at_build_not_in_stage_two(standins, tiny_world):
    from s2d_align.models.model import build_model

    config = tiny_world.config(f"model.text.name_or_path={standins['text']}").model
    with pytest.raises(ValueError, match=r"model\.text\.name_or_path=.*fails on a dummy input \(TypeError"):
        build_model(config, trust_remote_code=True)


def test_remote_code_never_runs_without_the_flag(standins, tmp_path):
    marker = tmp_path / "marker"
    folder = _link_folder(standins["text"], tmp_path / "evil", skip=("config.json", "modeling_cxrbert.py",
                                                                     "configuration_cxrbert.py"))
    config = json.loads((standins["text"] / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    encoder, _ = load_text_encoder(str(folder))  # a BERT checkpoint: loads with transformers' own class
    assert type(encoder.model).__name__ == "BertModel"
    assert not marker.exists()
    config["model_type"] = "evil-net"
    config["architectures"] = ["EvilModel"]
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"^model\.text\.name_or_path=.*: cannot be loaded"):
        load_text_encoder(str(folder))
    assert not marker.exists()
    load_text_encoder(str(folder), trust_remote_code=True)  # the explicit opt-in does run it
    assert marker.read_text() == "ran"


def test_files_cannot_turn_remote_code_on(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  text:\n    trust_remote_code: true\n")
    with pytest.raises(ConfigError, match="not read from files.*--trust-remote-code"):
        load_config(recipe)
    with pytest.raises(ConfigError, match="not read from files"):
        load_config(None, ["model.llm.trust_remote_code=true"])
    assert load_config(recipe, saved=True).model.text.name_or_path == "microsoft/BiomedVLP-CXR-BERT-specialized"
    with pytest.raises(ConfigError, match="not read from files"):  # an override is not a saved file
        load_config(recipe, ["model.vision.trust_remote_code=true"], saved=True)


def test_vicuna_tokenizer_from_sentencepiece_only(standins):
    assert not (standins["llm"] / "tokenizer.json").exists()
    model, tokenizer = load_llm(str(standins["llm"]), "bfloat16")
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token) == (1, 2, "<unk>")
    assert model.config.hidden_size == 4096 and model.config.vocab_size == 32000 and model.dtype == torch.bfloat16
    ids = tokenizer("The lungs are clear.").input_ids
    assert ids[0] == 1 and tokenizer.decode(ids, skip_special_tokens=True) == "The lungs are clear."


def test_grayscale_resized_before_rgb_gives_identical_pixels(standins):
    _, preprocess = load_vision_encoder(str(standins["vision"]))
    processor = preprocess.processor
    rng = np.random.default_rng(0)
    for width, height in ((2544, 3056), (3056, 2544), (700, 518), (300, 200)):
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        old = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        new = preprocess([image])
        assert new.shape == (1, 3, 518, 518) and torch.equal(old, new), (width, height)
    rgb = Image.fromarray(rng.integers(0, 256, (600, 640, 3), dtype=np.uint8))
    assert torch.equal(preprocess([rgb]), processor(images=[rgb], return_tensors="pt")["pixel_values"])


def test_unloadable_models_name_the_key(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: the env var is too late
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError) as err:
        load_llm(str(missing))
    assert str(err.value) == (
        f"model.llm.name_or_path={str(missing)!r}: cannot be loaded (no such folder); "
        "pass a local folder: model.llm.name_or_path=/path/to/model"
    )
    with pytest.raises(ModelLoadError, match=r"^model\.llm\.name_or_path='lmsys/vicuna-7b-v1\.5': cannot be loaded "
                                             r"\(the hub is unreachable"):
        load_llm("lmsys/vicuna-7b-v1.5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"^model\.text\.name_or_path=.*empty': cannot be loaded \(files are missing"):
        load_text_encoder(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match=r"^--vision-model='microsoft/rad-dino': cannot be loaded .*"
                                             r"pass a local folder: --vision-model=/path"):
        load_vision_encoder("microsoft/rad-dino", key="--vision-model")
    assert "\n" not in str(err.value)


def test_cli_shows_one_line_for_an_unloadable_model(tiny_world, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    args = ["train", "--config", "configs/mimic_cxr/s2d_align.yaml", "--out", str(tmp_path / "run"),
            f"model.vision.name_or_path={tiny_world.models['vision']}",
            f"model.text.name_or_path={tiny_world.models['text']}", f"data.manifest={tiny_world.manifest}"]
    result = subprocess.run([sys.executable, "-m", "s2d_align.cli", *args], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: model.llm.name_or_path='lmsys/vicuna-7b-v1.5': cannot be loaded (the hub is unreachable or has no "
        "such repository" + lines[0].split("repository", 1)[1]
    ]
    assert lines[0].endswith("pass a local folder: model.llm.name_or_path=/path/to/model")
    assert "Traceback" not in result.stderr
