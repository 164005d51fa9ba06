"""The real-shaped stand-ins at unit-test speed: hub layouts, published shapes, tokenizers, seeds and wiring.

Each folder is built once, by the test that reads it, as shallow as its builder allows (Rad-DINO and
CXR-BERT at one layer, Vicuna at none: its 32000 x 4096 embeddings and head alone are half a gigabyte), and
read back through the project's own loaders, never with remote code. Whole-model shapes are checked on the
meta device against the published parameter counts. What depends only on a builder's logic (seeds, layers,
defaults, dtypes) is checked on the same builders with the three configs narrowed to a few dozen features.
"""

from __future__ import annotations

import ast
import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from s2d_align.models import standins
from s2d_align.models.standins import (
    CORPUS,
    build_cxr_bert,
    build_rad_dino,
    build_standins,
    build_vicuna,
    cxr_bert_state_dict,
    hub_configs,
)

EXTRA = "Costophrenic angles are sharp; costophrenic recesses are clear."  # no word of CORPUS is "costophrenic"
TEXT = CORPUS + [EXTRA]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HUB_VOCAB = 30522


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}


# The hub's own files of lmsys/vicuna-7b-v1.5 (as published; transformers_version left out of the last)
VICUNA_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": _added("<s>"), "clean_up_tokenization_spaces": False,
    "eos_token": _added("</s>"), "legacy": False, "model_max_length": 4096, "pad_token": None,
    "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": _added("<unk>"),
}
VICUNA_SPECIAL_TOKENS = {"bos_token": _added("<s>"), "eos_token": _added("</s>"), "pad_token": "<unk>",
                         "unk_token": _added("<unk>")}
VICUNA_GENERATION = {"bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0,
                     "temperature": 0.9, "top_p": 0.6}
BERT_SPECIAL_TOKENS = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                       "unk_token": "[UNK]"}


def _json(path: Path):
    return json.loads(path.read_text())


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _on_meta(cls, config) -> int:
    with torch.device("meta"):
        return _parameters(cls(config))


def _vit_parameters(hidden: int, layers: int, mlp: int, patch: int, image: int, channels: int = 3) -> int:
    """A DINOv2 ViT counted by hand: patch projection, CLS and mask tokens, positions, blocks, final LayerNorm."""
    positions = (image // patch) ** 2 + 1
    embeddings = channels * patch * patch * hidden + hidden + 2 * hidden + positions * hidden
    block = 2 * 2 * hidden + 4 * (hidden * hidden + hidden) + 2 * hidden + hidden * mlp + mlp + mlp * hidden + hidden
    return embeddings + layers * block + 2 * hidden


# --------------------------------------------------------------------------- layouts and published shapes


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_hub_configs_have_the_published_parameter_counts():
    from transformers import BertModel, Dinov2Model, LlamaForCausalLM

    vision, text, llm = hub_configs()
    assert _vit_parameters(768, 12, 3072, 14, 518) == 86_580_480  # ViT-B/14 at 518 px: Rad-DINO's "86.6M"
    assert _on_meta(Dinov2Model, vision) == 86_580_480
    assert _on_meta(BertModel, text) == 109_482_240  # BERT-base (bert-base-uncased's BertModel)
    assert _on_meta(LlamaForCausalLM, llm) == 6_738_415_616  # Llama-2-7B, which Vicuna-7B v1.5 fine-tunes
    assert (vision.image_size // vision.patch_size) ** 2 == 37 * 37


def test_hub_configs_drop_the_keys_that_name_hub_classes_and_set_the_llm_depth():
    from transformers import BertConfig, Dinov2Config, LlamaConfig

    vision, text, llm = hub_configs()
    assert (type(vision), type(text), type(llm)) == (Dinov2Config, BertConfig, LlamaConfig)
    assert llm.num_hidden_layers == 32 and hub_configs(3)[2].num_hidden_layers == 3
    assert hub_configs(llm_layers=1)[2].num_hidden_layers == 1
    assert (vision.num_hidden_layers, text.num_hidden_layers) == (12, 12)
    for config in (vision, text, llm):
        assert config.architectures is None and config.transformers_version is None
        assert config.dtype is None and "auto_map" not in config.to_dict()
    assert text.model_type == "bert" and text.to_dict()["model_type"] == "bert"
    assert (text.projection_size, llm.rms_norm_eps, vision.layerscale_value) == (128, 1e-05, 1.0)  # the rest is kept


# Each real-shaped folder is built inside the one test that reads it, so that mutmut (which runs a mutant
# against the tests that called the mutated function) runs every check on it.

# --------------------------------------------------------------------------- Rad-DINO


def test_rad_dino_at_real_shape(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from s2d_align.models.vision import load_vision_encoder

    folder = tmp_path / "hub" / "vision"  # its parent is not there yet: the builder makes it
    build_rad_dino(folder, layers=1)
    assert _files(folder) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    saved = _json(folder / "config.json")
    assert {k: saved[k] for k in standins.RAD_DINO_CONFIG} == {**standins.RAD_DINO_CONFIG, "num_hidden_layers": 1}
    config = Dinov2Config.from_pretrained(folder)
    config.num_hidden_layers = 12
    assert _on_meta(Dinov2Model, config) == 86_580_480  # the file on disk, at its real depth
    header = _safetensors_header(folder / "model.safetensors")
    assert header["embeddings.position_embeddings"]["shape"] == [1, 37 * 37 + 1, 768]
    assert {k.split(".")[2] for k in header if k.startswith("encoder.layer.")} == {"0"}  # one layer, as asked
    assert (folder / "preprocessor_config.json").read_text() == json.dumps(
        standins.RAD_DINO_PREPROCESSOR, indent=2) + "\n"  # as the hub writes JSON: two spaces, a final newline
    encoder, preprocess = load_vision_encoder(str(folder))
    assert (encoder.hidden_size, encoder.num_prefix_tokens) == (768, 1)
    pixels = preprocess([Image.new("L", (600, 700), 100)])
    assert pixels.shape == (1, 3, 518, 518)
    torch.testing.assert_close(pixels, torch.full((1, 3, 518, 518), (100 / 255 - 0.5307) / 0.2583))
    assert encoder(pixels).shape == (1, 37 * 37, 768)


# --------------------------------------------------------------------------- CXR-BERT


def _cxr_bert_keys(layers: int) -> dict[str, tuple[int, ...]]:
    """CXR-BERT-specialized's checkpoint: BERT-base under ``bert.``, its MLM head, the 768 -> 128 -> 128 projection."""
    keys = {
        "bert.embeddings.word_embeddings.weight": (HUB_VOCAB, 768),
        "bert.embeddings.position_embeddings.weight": (512, 768),
        "bert.embeddings.token_type_embeddings.weight": (2, 768),
        "bert.embeddings.LayerNorm.weight": (768,), "bert.embeddings.LayerNorm.bias": (768,),
    }
    for i in range(layers):
        layer = f"bert.encoder.layer.{i}."
        keys.update({
            **{f"{layer}attention.self.{n}.weight": (768, 768) for n in ("query", "key", "value")},
            **{f"{layer}attention.self.{n}.bias": (768,) for n in ("query", "key", "value")},
            f"{layer}attention.output.dense.weight": (768, 768), f"{layer}attention.output.dense.bias": (768,),
            f"{layer}attention.output.LayerNorm.weight": (768,), f"{layer}attention.output.LayerNorm.bias": (768,),
            f"{layer}intermediate.dense.weight": (3072, 768), f"{layer}intermediate.dense.bias": (3072,),
            f"{layer}output.dense.weight": (768, 3072), f"{layer}output.dense.bias": (768,),
            f"{layer}output.LayerNorm.weight": (768,), f"{layer}output.LayerNorm.bias": (768,),
        })
    keys.update({
        "cls.predictions.bias": (HUB_VOCAB,),
        "cls.predictions.transform.dense.weight": (768, 768), "cls.predictions.transform.dense.bias": (768,),
        "cls.predictions.transform.LayerNorm.weight": (768,), "cls.predictions.transform.LayerNorm.bias": (768,),
        "cls.predictions.decoder.weight": (HUB_VOCAB, 768), "cls.predictions.decoder.bias": (HUB_VOCAB,),
        "cls_projection_head.dense_to_hidden.weight": (128, 768), "cls_projection_head.dense_to_hidden.bias": (128,),
        "cls_projection_head.LayerNorm.weight": (128,), "cls_projection_head.LayerNorm.bias": (128,),
        "cls_projection_head.dense_to_output.weight": (128, 128), "cls_projection_head.dense_to_output.bias": (128,),
    })
    return keys


def _classes(source: str) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}


def test_cxr_bert_at_real_shape(tmp_path):
    from transformers import BertModel

    from s2d_align.models.text import bert_config, load_text_encoder

    folder = tmp_path / "hub" / "text"
    build_cxr_bert(folder, TEXT, layers=1)
    assert _files(folder) == ["config.json", "configuration_cxrbert.py", "modeling_cxrbert.py", "pytorch_model.bin",
                              "special_tokens_map.json", "tokenization_cxrbert.py", "tokenizer_config.json",
                              "vocab.txt"]
    config = _json(folder / "config.json")
    assert config == {**standins.CXR_BERT_CONFIG, "num_hidden_layers": 1}
    plain = bert_config(config)
    plain.num_hidden_layers = 12
    assert _on_meta(BertModel, plain) == 109_482_240  # the file on disk, at its real depth

    # vocab.txt: 30522 distinct entries, the specials first, learned as BERT reads text, then BERT's fillers
    text = (folder / "vocab.txt").read_text()
    assert text.endswith("]\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    assert len(lines) == HUB_VOCAB and len(set(lines)) == HUB_VOCAB and lines[:5] == SPECIAL
    learned = lines.index("[unused0]")
    assert lines[learned:] == [f"[unused{i}]" for i in range(HUB_VOCAB - learned)]
    assert {"pleural", "effusion", "costophrenic", "##s", "user", ":", "."} <= set(lines[:learned])
    words = lines[5:learned]  # lowercased, split at spaces and punctuation
    assert all(w == w.lower() and " " not in w and (w.strip("#").isalnum() or len(w) == 1) for w in words)

    # the checkpoint's key names and shapes
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == _cxr_bert_keys(1)
    assert {v.dtype for v in state.values()} == {torch.float32}

    # the files that name its own code, and the older modeling file (read, never run)
    assert config["auto_map"] == {"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                                  "AutoModel": "modeling_cxrbert.CXRBertModel"}
    assert (config["model_type"], config["architectures"]) == ("cxr-bert", ["CXRBertModel"])
    assert _json(folder / "tokenizer_config.json") == {
        "auto_map": {"AutoTokenizer": ["tokenization_cxrbert.CXRBertTokenizer", None]}, "do_lower_case": True,
        "model_max_length": 512, "tokenizer_class": "CXRBertTokenizer"}
    assert _json(folder / "special_tokens_map.json") == BERT_SPECIAL_TOKENS
    for name, constant in (("configuration_cxrbert.py", standins.CONFIGURATION_CXRBERT),
                           ("modeling_cxrbert.py", standins.MODELING_CXRBERT_OLD),
                           ("tokenization_cxrbert.py", standins.TOKENIZATION_CXRBERT)):
        assert (folder / name).read_text() == constant, name
    configuration = _classes((folder / "configuration_cxrbert.py").read_text())
    modeling = _classes((folder / "modeling_cxrbert.py").read_text())
    tokenization = _classes((folder / "tokenization_cxrbert.py").read_text())
    assert [b.id for b in configuration["CXRBertConfig"].bases] == ["BertConfig"]
    assert [b.id for b in modeling["CXRBertModel"].bases] == ["BertForMaskedLM"]
    assert [b.id for b in tokenization["CXRBertTokenizer"].bases] == ["BertTokenizer"]
    output = modeling["CXRBertOutput"]
    assert [b.id for b in output.bases] == ["ModelOutput"] and output.decorator_list == []  # no @dataclass

    # read back by the project's loader: a plain BERT and BERT's tokenizer, no remote code
    encoder, tokenizer = load_text_encoder(str(folder))
    assert type(encoder.model) is BertModel and encoder.hidden_size == 768 and len(encoder.model.encoder.layer) == 1
    torch.testing.assert_close(encoder.model.embeddings.word_embeddings.weight,
                               state["bert.embeddings.word_embeddings.weight"], rtol=0, atol=0)
    torch.testing.assert_close(encoder.model.encoder.layer[0].output.dense.weight,
                               state["bert.encoder.layer.0.output.dense.weight"], rtol=0, atol=0)
    assert type(tokenizer).__name__ == "BertTokenizer" and len(tokenizer) == HUB_VOCAB
    assert tokenizer.tokenize("Pleural effusion; costophrenic") == ["pleural", "effusion", ";", "costophrenic"]
    assert tokenizer.convert_tokens_to_ids(SPECIAL) == [0, 1, 2, 3, 4]
    assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token, tokenizer.mask_token) == (
        "[CLS]", "[SEP]", "[PAD]", "[MASK]")


# --------------------------------------------------------------------------- Vicuna


def test_vicuna_at_real_shape(tmp_path):
    import sentencepiece as spm
    from safetensors import safe_open
    from sentencepiece import sentencepiece_model_pb2
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from s2d_align.models.llm import load_llm

    folder = tmp_path / "hub" / "llm"
    build_vicuna(folder, TEXT, layers=0)  # 32000 x 4096 embeddings and head: half a gigabyte in float16
    assert _files(folder) == ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                              "tokenizer.model", "tokenizer_config.json"]  # only sentencepiece: no tokenizer.json
    saved = _json(folder / "config.json")
    renamed = ("torch_dtype", "transformers_version", "rope_scaling")  # transformers 5 writes dtype, rope_parameters
    same = {k: v for k, v in standins.VICUNA_CONFIG.items() if k not in renamed}
    assert {k: saved[k] for k in same} == {**same, "num_hidden_layers": 0} and saved["dtype"] == "float16"
    assert saved["rope_parameters"] == {"rope_theta": 10000.0, "rope_type": "default"}  # Llama-2's plain RoPE
    config = LlamaConfig.from_pretrained(folder)
    config.num_hidden_layers = 32
    assert _on_meta(LlamaForCausalLM, config) == 6_738_415_616  # the file on disk, at its real depth

    # float16 weights, no layer, a head of its own
    header = _safetensors_header(folder / "model.safetensors")
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == {
        "model.embed_tokens.weight": ("F16", [32000, 4096]), "lm_head.weight": ("F16", [32000, 4096]),
        "model.norm.weight": ("F16", [4096])}
    with safe_open(folder / "model.safetensors", "pt") as weights:
        head, embeddings = weights.get_slice("lm_head.weight")[:8], weights.get_slice("model.embed_tokens.weight")[:8]
    assert not torch.equal(head, embeddings) and head.std() > 0

    # the hub's JSON files
    assert _json(folder / "tokenizer_config.json") == VICUNA_TOKENIZER_CONFIG
    assert _json(folder / "special_tokens_map.json") == VICUNA_SPECIAL_TOKENS
    assert _json(folder / "generation_config.json") == VICUNA_GENERATION
    generation = GenerationConfig.from_pretrained(folder)
    assert (generation.do_sample, generation.temperature, generation.top_p, generation.max_length) == (
        True, 0.9, 0.6, 4096)

    # Llama's sentencepiece settings: BPE, byte fallback, <unk> <s> </s> = 0 1 2, no normalisation
    data = (folder / "tokenizer.model").read_bytes()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    spec, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert (spec.vocab_size, spec.hard_vocab_limit, spec.byte_fallback, spec.split_digits) == (600, False, True, True)
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    assert (spec.character_coverage, spec.num_threads) == (1.0, 1)
    assert (normalizer.name, normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces) == (
        "identity", True, False)
    processor = spm.SentencePieceProcessor(model_proto=data)
    assert [processor.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert processor.get_piece_size() == 600  # a small vocabulary; the embedding keeps 32000 rows
    assert "€" not in "".join(TEXT)
    assert processor.encode("€", out_type=str) == ["▁", "<0xE2>", "<0x82>", "<0xAC>"]  # never seen: in bytes
    text = "Left  lobe 2024 ﬁbrosis €."  # two spaces, digits, a ligature NFKC would change
    assert processor.decode(processor.encode(text)) == text
    assert processor.encode("costophrenic", out_type=str) == ["▁co", "stophrenic"]  # learned from the extra text

    # read back by the project's loader
    model, tokenizer = load_llm(str(folder), "float16")
    assert type(model) is LlamaForCausalLM and model.dtype == torch.float16
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert (model.config.hidden_size, model.config.vocab_size, model.config.num_hidden_layers) == (4096, 32000, 0)
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token == "<unk>"  # the hub's special_tokens_map.json
    ids = tokenizer("The lungs are clear.").input_ids
    assert ids[0] == 1 and ids[-1] != 2  # BOS added, EOS not
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The lungs are clear."


def test_an_added_token_is_written_as_the_hub_writes_it():
    assert standins._added("<s>") == _added("<s>")
    assert standins.VICUNA_TOKENIZER_CONFIG == VICUNA_TOKENIZER_CONFIG


# --------------------------------------------------------------------------- builders at a narrow width

SMALL = {
    "RAD_DINO_CONFIG": {**standins.RAD_DINO_CONFIG, "hidden_size": 16, "num_attention_heads": 2, "image_size": 28},
    "CXR_BERT_CONFIG": {**standins.CXR_BERT_CONFIG, "hidden_size": 16, "num_attention_heads": 2,
                        "intermediate_size": 32, "max_position_embeddings": 64, "projection_size": 8},
    "VICUNA_CONFIG": {**standins.VICUNA_CONFIG, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                      "num_key_value_heads": 2, "max_position_embeddings": 64},
}


@pytest.fixture
def narrow(monkeypatch):
    """The builders with the three configs narrowed (vocabularies kept): the same code, a few MB of weights."""
    for name, config in SMALL.items():
        monkeypatch.setattr(standins, name, config)
    return SMALL


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return torch.load(path, weights_only=True) if path.suffix == ".bin" else load_file(path)


def _same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_rad_dino_honours_seed_layers_and_defaults(narrow, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    build_rad_dino(tmp_path / "a", 3, 2)
    header = _safetensors_header(tmp_path / "a" / "model.safetensors")
    assert {k.split(".")[2] for k in header if k.startswith("encoder.layer.")} == {"0", "1"}
    assert _json(tmp_path / "a" / "config.json")["hidden_size"] == 16
    torch.manual_seed(3)
    Dinov2Model(Dinov2Config(**{**SMALL["RAD_DINO_CONFIG"], "num_hidden_layers": 2})).save_pretrained(tmp_path / "ref")
    first = _tensors(tmp_path / "a" / "model.safetensors")
    assert _same(first, _tensors(tmp_path / "ref" / "model.safetensors"))
    build_rad_dino(tmp_path / "a", 3, 2)  # again, into the folder that is now there
    assert _same(first, _tensors(tmp_path / "a" / "model.safetensors"))
    build_rad_dino(tmp_path / "b", 4, 2)
    assert not torch.equal(first["embeddings.cls_token"], _tensors(tmp_path / "b" / "model.safetensors")[
        "embeddings.cls_token"])
    build_rad_dino(tmp_path / "default")
    assert _json(tmp_path / "default" / "config.json")["num_hidden_layers"] == 12
    build_rad_dino(tmp_path / "seed0", 0, 12)
    assert _same(_tensors(tmp_path / "default" / "model.safetensors"),
                 _tensors(tmp_path / "seed0" / "model.safetensors"))


def test_cxr_bert_honours_seed_layers_and_defaults(narrow, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    build_cxr_bert(tmp_path / "a", CORPUS, 3, 2)
    first = _tensors(tmp_path / "a" / "pytorch_model.bin")
    assert {k.split(".")[3] for k in first if k.startswith("bert.encoder.layer.")} == {"0", "1"}
    assert _json(tmp_path / "a" / "config.json")["num_hidden_layers"] == 2
    assert first["cls_projection_head.dense_to_hidden.weight"].shape == (8, 16)  # the config's projection_size
    torch.manual_seed(3)
    fields = {k: v for k, v in SMALL["CXR_BERT_CONFIG"].items() if k not in ("architectures", "auto_map", "model_type")}
    reference = BertForMaskedLM(BertConfig(**{**fields, "num_hidden_layers": 2})).state_dict()
    assert all(torch.equal(first[k], v) for k, v in reference.items()) and set(reference) < set(first)
    build_cxr_bert(tmp_path / "a", CORPUS, 3, 2)
    assert _same(first, _tensors(tmp_path / "a" / "pytorch_model.bin"))
    build_cxr_bert(tmp_path / "b", CORPUS, 4, 2)
    second = _tensors(tmp_path / "b" / "pytorch_model.bin")
    for key in ("bert.embeddings.word_embeddings.weight", "cls_projection_head.dense_to_output.weight"):
        assert not torch.equal(first[key], second[key]), key
    build_cxr_bert(tmp_path / "default", CORPUS)
    build_cxr_bert(tmp_path / "seed0", CORPUS, 0, 12)
    assert _json(tmp_path / "default" / "config.json")["num_hidden_layers"] == 12
    assert _same(_tensors(tmp_path / "default" / "pytorch_model.bin"),
                 _tensors(tmp_path / "seed0" / "pytorch_model.bin"))


def test_cxr_bert_learns_at_most_2000_entries_whatever_the_corpus(narrow, tmp_path):
    """A manifest's reports may hold more words than fit: vocab.txt keeps 30522 lines, 2000 of them learned."""
    letters = "bcdfghjklmnpqrstvwxz"
    words = [a + b + c + "o" for a in letters for b in "aeiu" for c in letters]  # 1600 made-up words...
    corpus = CORPUS + [" ".join(words[i:i + 20]) + " " + " ".join(w + "s" for w in words[i:i + 20])
                       for i in range(0, len(words), 20)]  # ... and their plurals: more than 2000 entries to learn
    build_cxr_bert(tmp_path / "text", corpus, 0, 1)
    lines = (tmp_path / "text" / "vocab.txt").read_text().splitlines()
    assert len(lines) == HUB_VOCAB and lines.index("[unused0]") == 2000


def test_the_projection_head_is_random_and_named_as_the_checkpoint(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    state = cxr_bert_state_dict(model)
    head = {k: tuple(v.shape) for k, v in state.items() if k.startswith("cls_projection_head.")}
    assert head == {"cls_projection_head.dense_to_hidden.weight": (128, 16),
                    "cls_projection_head.dense_to_hidden.bias": (128,),
                    "cls_projection_head.LayerNorm.weight": (128,), "cls_projection_head.LayerNorm.bias": (128,),
                    "cls_projection_head.dense_to_output.weight": (128, 128),
                    "cls_projection_head.dense_to_output.bias": (128,)}
    assert set(state) - set(head) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert state["cls_projection_head.dense_to_hidden.weight"].std() > 0
    assert not torch.equal(state["cls_projection_head.dense_to_output.weight"],
                           cxr_bert_state_dict(model)["cls_projection_head.dense_to_output.weight"])  # drawn anew
    assert all(not v.requires_grad for v in state.values())
    assert cxr_bert_state_dict(model, 4)["cls_projection_head.dense_to_output.weight"].shape == (4, 4)


def test_vicuna_honours_seed_layers_float16_and_restores_the_default_dtype(narrow, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        build_vicuna(tmp_path / "a", CORPUS, 3, 1)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)
    first = _tensors(tmp_path / "a" / "model.safetensors")
    assert {v.dtype for v in first.values()} == {torch.float16}
    assert {k.split(".")[2] for k in first if k.startswith("model.layers.")} == {"0"}
    assert _json(tmp_path / "a" / "config.json")["num_hidden_layers"] == 1
    torch.manual_seed(3)
    fields = {k: v for k, v in SMALL["VICUNA_CONFIG"].items() if k not in ("architectures", "model_type", "torch_dtype",
                                                                           "transformers_version")}
    torch.manual_seed(3)
    torch.set_default_dtype(torch.float16)
    try:
        LlamaForCausalLM(LlamaConfig(**{**fields, "num_hidden_layers": 1})).save_pretrained(tmp_path / "ref")
    finally:
        torch.set_default_dtype(previous)
    assert _same(first, _tensors(tmp_path / "ref" / "model.safetensors"))
    build_vicuna(tmp_path / "a", CORPUS, 3, 1)
    assert _same(first, _tensors(tmp_path / "a" / "model.safetensors"))
    build_vicuna(tmp_path / "b", CORPUS, 4, 1)
    assert not torch.equal(first["model.embed_tokens.weight"], _tensors(tmp_path / "b" / "model.safetensors")[
        "model.embed_tokens.weight"])
    build_vicuna(tmp_path / "default", CORPUS)
    build_vicuna(tmp_path / "seed0", CORPUS, 0, 2)
    assert _json(tmp_path / "default" / "config.json")["num_hidden_layers"] == 2
    assert _same(_tensors(tmp_path / "default" / "model.safetensors"),
                 _tensors(tmp_path / "seed0" / "model.safetensors"))


def test_vicuna_restores_the_default_dtype_when_the_model_fails(narrow, tmp_path, monkeypatch):
    import transformers

    seen = []

    def failing(config):
        seen.append(torch.get_default_dtype())
        raise RuntimeError("no memory")

    monkeypatch.setattr(transformers, "LlamaForCausalLM", failing)
    with pytest.raises(RuntimeError, match="no memory"):
        build_vicuna(tmp_path / "llm", CORPUS, 0, 1)
    assert seen == [torch.float16] and torch.get_default_dtype() == torch.float32


def test_vicuna_says_which_package_it_needs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # ``import sentencepiece`` now raises ImportError
    with pytest.raises(ImportError) as raised:
        build_vicuna(tmp_path / "llm", CORPUS)
    assert str(raised.value) == "building the Vicuna stand-in needs the sentencepiece package"
    assert isinstance(raised.value.__cause__, ImportError)
    assert not (tmp_path / "llm").exists()


# --------------------------------------------------------------------------- build_standins


def test_build_standins_passes_seeds_layers_and_the_corpus(tmp_path, monkeypatch):
    calls = []
    for name in ("build_rad_dino", "build_cxr_bert", "build_vicuna"):
        monkeypatch.setattr(standins, name, lambda *args, _name=name: calls.append((_name, *args)))
    corpus = CORPUS.copy()
    paths = build_standins(tmp_path, llm_layers=5, seed=7, vision_layers=3, text_layers=4, corpus=["", EXTRA, ""])
    assert paths == {"vision": tmp_path / "vision", "text": tmp_path / "text", "llm": tmp_path / "llm"}
    assert calls == [("build_rad_dino", tmp_path / "vision", 7, 3), ("build_cxr_bert", tmp_path / "text", TEXT, 8, 4),
                     ("build_vicuna", tmp_path / "llm", TEXT, 9, 5)]
    assert CORPUS == corpus
    calls.clear()
    paths = build_standins(str(tmp_path))
    assert paths["vision"] == tmp_path / "vision"
    assert calls == [("build_rad_dino", tmp_path / "vision", 0, 12),
                     ("build_cxr_bert", tmp_path / "text", CORPUS, 1, 12),
                     ("build_vicuna", tmp_path / "llm", CORPUS, 2, 2)]


def test_the_corpus_teaches_both_tokenizers_its_words(narrow, tmp_path):
    """``costophrenic``: one WordPiece and two sentencepiece pieces with the extra text, many without it."""
    import sentencepiece as spm
    from transformers import BertTokenizer

    for name, text in (("with", TEXT), ("without", CORPUS)):
        build_cxr_bert(tmp_path / name / "text", text, 0, 1)
        build_vicuna(tmp_path / name / "llm", text, 0, 1)
    pieces = {name: BertTokenizer(str(tmp_path / name / "text" / "vocab.txt")).tokenize("costophrenic")
              for name in ("with", "without")}
    assert pieces["with"] == ["costophrenic"]
    assert len(pieces["without"]) > 1 and "".join(pieces["without"]).replace("##", "") == "costophrenic"
    sentencepiece = {name: spm.SentencePieceProcessor(model_file=str(tmp_path / name / "llm" / "tokenizer.model"))
                     for name in ("with", "without")}
    assert len(sentencepiece["with"].encode("costophrenic")) == 2 < len(sentencepiece["without"].encode("costophrenic"))
