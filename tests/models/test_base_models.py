"""The base-model wrappers at unit-test speed: E_v, E_t, the LLM and LoRA, and the one-line load errors.

Every folder here is a random model a few hundred parameters wide, written by the test in the hub's
layout; ``test_loading.py`` does the same at real shape (Rad-DINO, CXR-BERT, Vicuna).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from s2d_align.models import loading
from s2d_align.models.llm import add_lora, load_llm
from s2d_align.models.loading import ModelLoadError, explain_load_errors
from s2d_align.models.text import is_bert_family, load_text_encoder, text_hidden_size
from s2d_align.models.vision import ImagePreprocessor, infer_prefix_tokens, load_vision_encoder
from tests.conftest import plant_remote_code

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "lungs", "are", "clear", "."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertTokenizer,
        BitImageProcessor,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    root = tmp_path_factory.mktemp("base_models")
    torch.manual_seed(0)
    vision = root / "vision"
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14,
        num_register_tokens=2)).save_pretrained(vision)
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(vision)

    text = root / "cxr_bert"  # CXR-BERT's layout: an MLM checkpoint under ``bert.``, a config naming custom code
    (text_vocab := root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertForMaskedLM(BertConfig(vocab_size=len(WORDS), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(text)
    BertTokenizer(str(text_vocab)).save_pretrained(text)
    config = json.loads((text / "config.json").read_text())
    config.update(model_type="cxr-bert", architectures=["CXRBertModel"],
                  auto_map={"AutoModel": "modeling_cxrbert.CXRBertModel"})
    (text / "config.json").write_text(json.dumps(config))

    def llm(name: str, **special) -> Path:
        vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", "▁the", "▁lungs", "▁clear"])}
        word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        word_level.pre_tokenizer = pre_tokenizers.Metaspace()
        folder = root / name
        PreTrainedTokenizerFast(tokenizer_object=word_level, **special).save_pretrained(folder)
        LlamaForCausalLM(LlamaConfig(vocab_size=6, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
        return folder

    return {
        "vision": vision, "text": text,
        "llm": llm("llm", bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
        "llm_no_unk": llm("llm_no_unk", eos_token="</s>"),
        "llm_no_eos": llm("llm_no_eos", unk_token="<unk>"),
    }


def _copy(source: Path, target: Path, *skip: str) -> Path:
    """A copy of a base-model folder to change, without the files named in ``skip``."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*skip))
    return target


# --------------------------------------------------------------------------- E_v


def test_the_vision_encoder_is_frozen_and_drops_cls_and_registers(folders):
    encoder, preprocess = load_vision_encoder(str(folders["vision"]))
    assert encoder.num_prefix_tokens == 3 and encoder.hidden_size == 8
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.train() is encoder and not encoder.training and not encoder.model.training
    pixels = preprocess([Image.new("L", (40, 30), 128)])
    assert pixels.shape == (1, 3, 28, 28)
    full = encoder.model(pixel_values=pixels).last_hidden_state
    patches = encoder(pixels)
    assert patches.shape == (1, 4, 8) and not patches.requires_grad
    torch.testing.assert_close(patches, full[:, 3:], rtol=0, atol=0)
    embedded = encoder.embed(pixels)
    torch.testing.assert_close(embedded, torch.nn.functional.normalize(full[:, 3:].mean(dim=1), dim=-1), rtol=0, atol=0)
    assert load_vision_encoder(str(folders["vision"]), num_prefix_tokens=1)[0].num_prefix_tokens == 1
    assert infer_prefix_tokens(SimpleNamespace()) == 1 and infer_prefix_tokens(SimpleNamespace(num_register_tokens=4)) == 5


def _noise() -> Image.Image:
    """50 x 100 pixels of noise: every resampling filter gives it different pixels."""
    import numpy as np

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 50), dtype=np.uint8))


def _processor(**settings):
    return SimpleNamespace(**{"do_resize": True, "resample": Image.Resampling.BILINEAR, **settings})


@pytest.mark.parametrize("settings, size", [
    ({"size": {"shortest_edge": 20}}, (20, 40)),  # the short side to 20, the aspect kept
    ({"size": {"height": 10, "width": 12}}, (12, 10)),
    ({"size": {"shortest_edge": 20, "longest_edge": 30}}, (50, 100)),  # a rule the processor applies itself
    ({"size": {}}, (50, 100)),
    ({"size": {"height": 10}}, (50, 100)),  # half a fixed size: not a rule we know
    ({"size": None}, (50, 100)),
    ({"size": {"shortest_edge": 20}, "do_resize": False}, (50, 100)),
])
def test_grayscale_is_resized_with_the_processors_own_rule_and_filter(settings, size):
    image = _noise()
    prepared = ImagePreprocessor(_processor(**settings)).prepare(image)
    assert prepared.mode == "RGB" and prepared.size == size
    if size != image.size:
        expected = image.resize(size, resample=Image.Resampling.BILINEAR)
        assert prepared.tobytes() == expected.convert("RGB").tobytes()
        assert prepared.tobytes() != image.resize(size, resample=Image.Resampling.BICUBIC).convert("RGB").tobytes()


def test_the_default_filter_is_bicubic_and_other_modes_only_change_colour():
    image = _noise()
    prepared = ImagePreprocessor(_processor(resample=None, size={"shortest_edge": 20})).prepare(image)
    assert prepared.tobytes() == image.resize((20, 40), resample=Image.Resampling.BICUBIC).convert("RGB").tobytes()
    for mode in ("I;16", "I", "F", "RGB", "P"):  # left for the processor to resize
        prepared = ImagePreprocessor(_processor(size={"shortest_edge": 20})).prepare(image.convert(mode))
        assert (prepared.mode, prepared.size) == ("RGB", (50, 100)), mode
    no_resize_setting = SimpleNamespace(size={"shortest_edge": 20})  # a processor without do_resize does not resize
    assert ImagePreprocessor(no_resize_setting).prepare(image).size == (50, 100)


# --------------------------------------------------------------------------- E_t


def test_a_cxr_bert_folder_loads_as_a_plain_bert_without_its_heads(folders):
    from transformers import BertForMaskedLM, BertModel

    from s2d_align.models.text import bert_config

    encoder, tokenizer = load_text_encoder(str(folders["text"]))
    assert type(encoder.model) is BertModel and encoder.model.pooler is None and encoder.hidden_size == 8
    assert type(tokenizer).__name__ == "BertTokenizer"
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.train().training
    batch = tokenizer(["the lungs are clear .", "clear"], padding=True, return_tensors="pt")
    assert batch.input_ids[0].tolist() == [2, 5, 6, 7, 8, 9, 3]
    features = encoder(batch.input_ids, batch.attention_mask)
    plain = bert_config(json.loads((folders["text"] / "config.json").read_text()))
    reference = BertForMaskedLM.from_pretrained(folders["text"], config=plain).bert.eval()
    expected = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert text_hidden_size(str(folders["text"])) == 8


def test_a_bert_family_folder_whose_weights_are_not_a_bert_is_refused(folders, tmp_path):
    folder = _copy(folders["text"], tmp_path / "not_bert", "model.safetensors")  # its config and tokenizer files
    (folder / "model.safetensors").write_bytes((folders["vision"] / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError) as raised:
        load_text_encoder(str(folder), key="--text-model")
    message = str(raised.value)
    assert message.startswith(f"--text-model={str(folder)!r}: cannot be loaded (files are missing or unreadable (")
    assert "(not a BERT checkpoint, pass --trust-remote-code to use its own code (missing ['" in message


@pytest.mark.parametrize("config, expected", [
    ({"model_type": "bert"}, True),
    ({"model_type": "cxr-bert", "architectures": ["CXRBertModel"]}, True),  # unknown to transformers
    ({"model_type": "custom-net", "auto_map": {}, "architectures": ["MyBertModel"]}, True),  # custom code, BERT weights
    ({"model_type": "CXR-Bert"}, True),
    ({"model_type": "gpt2", "auto_map": {}, "architectures": ["GPT2BertModel"]}, True),  # a known type, custom code
    ({"model_type": "cxr-bert", "architectures": []}, True),
    ({"model_type": "custom-net", "auto_map": {}, "architectures": ["MybertModel"]}, False),
    ({"model_type": "custom", "auto_map": {}, "architectures": ["CustomModel"]}, False),
    ({"model_type": "roberta", "architectures": ["RobertaModel"]}, False),
    ({"model_type": "roberta", "architectures": ["BertLikeModel"]}, False),  # a class transformers knows
    ({}, False),
])
def test_which_configs_are_bert_family(config, expected):
    assert is_bert_family(config) is expected


def test_a_bert_family_config_keeps_no_trace_of_its_custom_code():
    from s2d_align.models.text import bert_config

    config = bert_config({"model_type": "cxr-bert", "architectures": ["CXRBertModel"], "hidden_size": 8,
                          "auto_map": {"AutoModel": "modeling_cxrbert.CXRBertModel"}, "num_attention_heads": 2})
    saved = config.to_dict()
    assert (config.hidden_size, saved["model_type"], saved.get("architectures"), "auto_map" in saved) == (
        8, "bert", None, False)


@pytest.mark.parametrize("change", ["fewer layers", "an extra tensor"])
def test_a_bert_checkpoint_that_does_not_fit_its_config_is_refused(folders, tmp_path, change):
    from safetensors.torch import load_file, save_file

    folder = _copy(folders["text"], tmp_path / "bert")
    if change == "fewer layers":  # missing keys only
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    else:  # unexpected keys only
        weights = load_file(folder / "model.safetensors")
        save_file({**weights, "bert.encoder.extra.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"not a BERT checkpoint, pass --trust-remote-code"):
        load_text_encoder(str(folder))


def test_a_bert_folder_without_its_vocabulary_is_refused(folders, tmp_path):
    """transformers would build a tokenizer of the special tokens alone and read every word as [UNK]."""
    folder = _copy(folders["text"], tmp_path / "no_vocab", "tokenizer*")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(ModelLoadError) as raised:
        load_text_encoder(str(folder))
    assert "no tokenizer vocabulary (vocab.txt or tokenizer.json)" in str(raised.value)


def test_a_text_encoder_outside_the_bert_family_loads_through_automodel(folders, tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path / "distilbert"
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(WORDS), dim=8, n_layers=1, n_heads=2, hidden_dim=16)).save_pretrained(
        folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # BERT's WordPiece files serve DistilBERT too
        shutil.copy(folders["text"] / name, folder / name)
    encoder, tokenizer = load_text_encoder(str(folder))
    assert type(encoder.model).__name__ == "DistilBertModel" and encoder.hidden_size == 8
    batch = tokenizer(["the lungs are clear ."], return_tensors="pt")
    assert encoder(batch.input_ids, batch.attention_mask).shape == (1, 7, 8)


# --------------------------------------------------------------------------- the LLM


def test_the_llm_gets_a_pad_token_and_its_dtype(folders):
    model, tokenizer = load_llm(str(folders["llm"]), "bfloat16")
    assert model.dtype == torch.bfloat16 and (tokenizer.pad_token, tokenizer.eos_token) == ("<unk>", "</s>")
    assert load_llm(str(folders["llm_no_unk"]))[1].pad_token == "</s>"  # no <unk>: EOS pads
    assert load_llm(str(folders["llm"]))[0].dtype == torch.float32
    with pytest.raises(ValueError, match=r"llm_no_eos: the tokenizer has no EOS token; reports could never end$"):
        load_llm(str(folders["llm_no_eos"]))


def test_lora_wraps_every_linear_frozen_base_identity_and_a_stable_config(folders):
    model, _ = load_llm(str(folders["llm"]))
    ids = torch.tensor([[1, 3, 4, 5]])
    before = model(input_ids=ids).logits
    wrapped = add_lora(model, r=2, alpha=4, dropout=0.0, target_modules="all-linear")
    config = wrapped.peft_config["default"]
    assert config.target_modules == [f"model.layers.0.{name}" for name in (
        "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj",
        "self_attn.v_proj")]  # sorted: the same adapter_config.json in every process
    assert (config.r, config.lora_alpha, config.lora_dropout) == (2, 4, 0.0)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable) and len(trainable) == 14
    torch.testing.assert_close(wrapped(input_ids=ids).logits, before, rtol=0, atol=0)  # B = 0
    listed, _ = load_llm(str(folders["llm"]))
    listed = add_lora(listed, r=2, alpha=4, dropout=0.1, target_modules=("v_proj", "q_proj"))
    assert sorted(listed.peft_config["default"].target_modules) == ["q_proj", "v_proj"]
    assert type(listed).__name__ == "PeftModelForCausalLM"  # generate() and logits_to_keep pass through
    assert listed.peft_config["default"].lora_dropout == 0.1


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize("error, reason", [
    (ImportError("No module named 'sentencepiece'"), "a package is missing: No module named 'sentencepiece'"),
    (ValueError("This tokenizer requires the protobuf library"), "a package is missing: This tokenizer requires the "
                                                                   "protobuf library"),
    (OSError("please pip install tiktoken"), "a package is missing: please pip install tiktoken"),
    (OSError("You are trying to access a gated repo."), "the repository is gated or private; accept its terms and "
                                                         "log in, or download it"),
    (OSError("401 Client Error"), "the repository is gated or private; accept its terms and log in, or download it"),
    (OSError("403 Forbidden"), "the repository is gated or private; accept its terms and log in, or download it"),
    (OSError("access is restricted"), "the repository is gated or private; accept its terms and log in, or download it"),
    (KeyError("x"), "the hub is unreachable or has no such repository ('x')"),
    (RuntimeError("connection\n  reset"), "the hub is unreachable or has no such repository (connection reset)"),
])
def test_each_failure_is_explained_in_one_line(error, reason):
    with pytest.raises(ModelLoadError) as raised, explain_load_errors("model.llm.name_or_path", "org/model"):
        raise error
    assert str(raised.value) == (f"model.llm.name_or_path='org/model': cannot be loaded ({reason}); "
                                 "pass a local folder: model.llm.name_or_path=/path/to/model")
    assert raised.value.__cause__ is error


def test_long_causes_are_cut_and_folders_are_told_apart(tmp_path):
    long = "x" * 300
    assert loading._reason("org/model", ImportError(long)) == f"a package is missing: {'x' * 200}"
    assert loading._reason("org/model", OSError(long)) == f"the hub is unreachable or has no such repository ({'x' * 160})"
    assert loading._reason(str(tmp_path), OSError(long)) == f"files are missing or unreadable ({'x' * 160})"
    for name in ("model", "./model", "/nowhere/model", "~/model", "/model/"):
        assert loading._reason(name, OSError("not found")) == "no such folder", name


def test_each_loader_names_its_own_key_by_default(tmp_path):
    missing = str(tmp_path / "nowhere")
    for load, key in ((load_vision_encoder, "model.vision.name_or_path"), (load_text_encoder, "model.text.name_or_path"),
                      (text_hidden_size, "model.text.name_or_path"), (load_llm, "model.llm.name_or_path")):
        with pytest.raises(ModelLoadError) as raised:
            load(missing)
        assert str(raised.value) == (f"{key}={missing!r}: cannot be loaded (no such folder); "
                                     f"pass a local folder: {key}=/path/to/model"), load.__name__


@pytest.mark.parametrize("name, base, head, auto, load", [
    ("vision", "Dinov2WithRegisters", "Model", "AutoModel", load_vision_encoder),
    ("llm", "Llama", "ForCausalLM", "AutoModelForCausalLM", load_llm),
    ("text", "Bert", "Model", "AutoModel", load_text_encoder),
])
def test_no_loader_runs_a_folders_own_code_unless_asked(folders, tmp_path, name, base, head, auto, load):
    """A folder whose config names its own classes through ``auto_map``: by default nothing of it is
    imported (the load fails in one line); ``trust_remote_code=True`` does import it."""
    folder, marker = _copy(folders[name], tmp_path / name), tmp_path / "ran"
    plant_remote_code(folder, marker, base, head, auto)
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load(str(folder))
    assert not marker.exists()
    try:
        load(str(folder), trust_remote_code=True)
    except Exception:  # noqa: BLE001 - a stand-in need not load in full: that its code ran is the point
        pass
    assert marker.read_text() == "ran"


def test_other_errors_pass_through_unchanged():
    first = ModelLoadError("already explained")
    with pytest.raises(ModelLoadError) as raised, explain_load_errors("k", "n"):
        raise first
    assert raised.value is first
    with pytest.raises(TypeError, match="a bug"), explain_load_errors("k", "n"):
        raise TypeError("a bug")
