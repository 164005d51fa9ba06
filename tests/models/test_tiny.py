"""The tiny random base models at unit-test speed: files, configs, tokenizers, seeds and the text-only pretraining.

Every model here is a few dozen parameters wide and built from a five-study manifest written by the test,
whose words are chosen so that each source of the tokenizers' corpus can be told apart: a word found only
in an impression (``zygomatic``), only in a key phrase (``xiphoid``), only in the prompt (``bilby``), only in
the instruction (``numbat``), and words found only in the validation or test split, which must be absent.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from s2d_align.config import PromptConfig
from s2d_align.data.manifest import KeyPhrase, Study, write_manifest
from s2d_align.models import tiny
from s2d_align.models.tiny import TinySizes, build_tiny_models, wordpiece_vocabulary

PROMPT = "USER: Bilby radiograph."
INSTRUCTION = "Numbat findings ASSISTANT:"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Small and all different, so that a width or depth passed to the wrong model shows.
SIZES = TinySizes(image_size=35, patch_size=7, vision_hidden=8, vision_layers=2, text_hidden=12, text_layers=3,
                  text_vocab=500, llm_hidden=16, llm_layers=1, llm_heads=2, llm_vocab=400, max_positions=96,
                  llm_pretrain_steps=3, llm_pretrain_batch=2)
NO_PRETRAINING = dataclasses.replace(SIZES, llm_pretrain_steps=0)


def _study(i: int, split: str, findings: str, impression: str | None, phrases: list[str]) -> Study:
    return Study(id=f"s{i}", split=split, subject_id=f"p{i}", study_id=f"s{i}", images=(f"images/s{i}.png",),
                 findings=findings, impression=impression, key_phrases=tuple(KeyPhrase(t, "test") for t in phrases))


STUDIES = [
    _study(0, "train", "The lungs are clear. Heart size is normal.", "Zygomatic arch intact.",
           ["clear lungs", "normal heart size", "xiphoid process"]),
    _study(1, "train", "There is a small left pleural effusion.", None,
           ["small left pleural effusion", "no pneumothorax", "mild cardiomegaly", "left effusion"]),
    _study(2, "train", "Mild cardiomegaly is present. No pneumothorax is seen.", "",
           ["mild cardiomegaly", "no pneumothorax", "present heart", "normal lungs", "clear effusion"]),
    _study(3, "val", "Vallecula is seen.", "Valvular change.", ["vallecula"]),
    _study(4, "test", "Osteopenia is present.", "Osteophytes.", ["osteopenia"]),
]
TRAIN = STUDIES[:3]
ONLY_OUTSIDE_TRAIN = ["vallecula", "valvular", "change", "osteopenia", "osteophytes"]


def _train_corpus(prompt: str = PROMPT, instruction: str = INSTRUCTION) -> list[str]:
    """What the docstring says the tokenizers learn from: the train split's texts, the prompt and instruction."""
    texts = [s.findings for s in TRAIN] + [s.impression for s in TRAIN if s.impression]
    return texts + [k.text for s in TRAIN for k in s.key_phrases] + [prompt, instruction]


def _bert_words(texts: list[str]) -> list[str]:
    """BERT's lowercasing and whitespace/punctuation split, written out for plain ASCII text."""
    return [w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "manifest.jsonl"
    write_manifest(path, STUDIES)
    return path


@pytest.fixture
def built(tmp_path, manifest) -> dict[str, Path]:
    """Built anew for each test (a fraction of a second): mutmut then knows which tests read the builders."""
    out = tmp_path / "tiny" / "base_models"
    return build_tiny_models(str(out), manifest, seed=0, sizes=SIZES, prompt=PROMPT, instruction=INSTRUCTION)


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    """Replace the text-only pretraining by a recorder of its arguments (the LLM keeps its initial weights)."""
    calls = []

    def record(model, tokenizer, examples, sizes, seed):
        calls.append(dict(model=model, tokenizer=tokenizer, examples=examples, sizes=sizes, seed=seed))

    monkeypatch.setattr(tiny, "_pretrain_language_model", record)
    return calls


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_same_weights(folder: Path, model: torch.nn.Module, scratch: Path) -> None:
    """The weights saved in ``folder`` are ``model``'s, tensor for tensor (both as ``save_pretrained`` writes them)."""
    assert scratch != folder
    model.save_pretrained(scratch)
    saved, expected = _weights(folder), _weights(scratch)
    assert saved.keys() == expected.keys()
    for key, value in saved.items():
        assert torch.equal(value, expected[key]), key


# --------------------------------------------------------------------------- the folders


def test_the_three_folders_hold_their_models_files(built):
    root = built["vision"].parent
    assert built == {"vision": root / "vision", "text": root / "text", "llm": root / "llm"}
    assert all(isinstance(path, Path) for path in built.values())  # ``out`` was given as a str
    files = {name: sorted(p.name for p in path.iterdir()) for name, path in built.items()}
    assert files == {
        "vision": ["config.json", "model.safetensors", "preprocessor_config.json"],
        "text": ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
        "llm": ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json"],
    }


# --------------------------------------------------------------------------- vision


def test_the_vision_encoder_is_a_dinov2_of_the_sizes_with_unit_scale_positions(built):
    from s2d_align.models.vision import load_vision_encoder

    config = _config(built["vision"])
    assert config["model_type"] == "dinov2" and config["architectures"] == ["Dinov2Model"]
    assert {k: config[k] for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers",
                                   "num_attention_heads", "mlp_ratio")} == {
        "image_size": 35, "patch_size": 7, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4,
        "mlp_ratio": 2}
    positions = _weights(built["vision"])["embeddings.position_embeddings"]
    assert positions.shape == (1, 26, 8)  # CLS + (35 / 7) ** 2 patches
    # N(0, 1), not the config's 0.02
    assert 0.75 < positions.std().item() < 1.25 and abs(positions.mean().item()) < 0.25
    cls = _weights(built["vision"])["embeddings.cls_token"]
    assert cls.std().item() < 0.1  # the rest keeps the config's initialisation
    encoder, preprocess = load_vision_encoder(str(built["vision"]))
    assert (encoder.hidden_size, encoder.num_prefix_tokens) == (8, 1)
    assert encoder(preprocess([Image.new("L", (35, 35), 0)])).shape == (1, 25, 8)


def test_the_image_processor_resizes_crops_and_normalises_at_half_and_a_quarter(built):
    from s2d_align.models.vision import load_vision_encoder

    saved = json.loads((built["vision"] / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "BitImageProcessor"
    assert {k: saved[k] for k in ("do_resize", "size", "do_center_crop", "crop_size", "image_mean", "image_std",
                                  "do_convert_rgb")} == {
        "do_resize": True, "size": {"shortest_edge": 35}, "do_center_crop": True,
        "crop_size": {"height": 35, "width": 35}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
        "do_convert_rgb": True}
    _, preprocess = load_vision_encoder(str(built["vision"]))
    pixels = preprocess.processor(images=[Image.new("L", (70, 50), 51)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 35, 35)  # short side to 35 (49 x 35), then the centre 35 x 35, in RGB
    torch.testing.assert_close(pixels, torch.full((1, 3, 35, 35), (51 / 255 - 0.5) / 0.25))


# --------------------------------------------------------------------------- text


def test_the_text_encoder_is_a_bert_over_its_vocabulary(built):
    from transformers import BertModel

    from s2d_align.models.text import load_text_encoder

    config = _config(built["text"])
    vocab = json.loads((built["text"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert config["model_type"] == "bert"
    assert {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "intermediate_size", "max_position_embeddings", "pad_token_id")} == {
        "vocab_size": len(vocab), "hidden_size": 12, "num_hidden_layers": 3, "num_attention_heads": 4,
        "intermediate_size": 24, "max_position_embeddings": 512, "pad_token_id": 0}
    assert vocab["[PAD]"] == 0
    encoder, tokenizer = load_text_encoder(str(built["text"]))
    assert type(encoder.model) is BertModel and encoder.hidden_size == 12 and len(tokenizer) == len(vocab)
    batch = tokenizer(["The lungs are clear."], return_tensors="pt")
    assert encoder(batch.input_ids, batch.attention_mask).shape == (1, 7, 12)  # [CLS] the lungs are clear . [SEP]


def test_the_text_vocabulary_is_wordpiece_vocabulary_of_the_train_corpus(built):
    vocab = json.loads((built["text"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab == wordpiece_vocabulary(_bert_words(_train_corpus()), 500, SPECIAL)
    for word in ("zygomatic", "xiphoid", "bilby", "numbat"):  # impression, key phrase, prompt, instruction only
        assert word in vocab, word
    assert "Zygomatic" not in vocab and "assistant" in vocab  # lowercased
    for word in ONLY_OUTSIDE_TRAIN:
        assert word not in vocab, word


def test_the_text_tokenizer_lowercases_wraps_in_cls_sep_and_decodes_wordpieces(built):
    from tokenizers import Tokenizer

    from s2d_align.models.text import load_text_encoder

    _, tokenizer = load_text_encoder(str(built["text"]))
    raw = Tokenizer.from_file(str(built["text"] / "tokenizer.json"))
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (2, 3, 0)
    assert (tokenizer.unk_token, tokenizer.mask_token) == ("[UNK]", "[MASK]")
    single = raw.encode("LUNGS Zygomatic.")
    assert single.tokens == ["[CLS]", "lungs", "zygomatic", ".", "[SEP]"]
    assert tokenizer("LUNGS Zygomatic.").input_ids == single.ids
    pair = raw.encode("clear lungs", "no effusion")
    assert pair.tokens == ["[CLS]", "clear", "lungs", "[SEP]", "no", "effusion", "[SEP]"]
    assert pair.type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert tokenizer("clear lungs", "no effusion").input_ids == pair.ids
    spelt = raw.encode("lungz", add_special_tokens=False)  # not a corpus word: spelt with ## continuations
    assert spelt.tokens == ["l", "##u", "##n", "##g", "##z"]
    assert raw.decode(spelt.ids) == "lungz" and tokenizer.decode(spelt.ids) == "lungz"
    assert "q" not in "".join(_train_corpus()).lower()
    assert raw.encode("q", add_special_tokens=False).tokens == ["[UNK]"]
    for text in _train_corpus():
        assert 1 not in raw.encode(text).ids, text


def test_a_capped_vocabulary_keeps_every_character_and_the_most_frequent_words(manifest, tmp_path, recorded):
    from tokenizers import Tokenizer

    chars = sorted({c for w in _bert_words(_train_corpus()) for c in w})
    size = len(SPECIAL) + 2 * len(chars) + 4
    sizes = dataclasses.replace(NO_PRETRAINING, text_vocab=size, llm_vocab=60)
    paths = build_tiny_models(tmp_path, manifest, seed=0, sizes=sizes, prompt=PROMPT, instruction=INSTRUCTION)
    raw = json.loads((paths["text"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(raw) == size == _config(paths["text"])["vocab_size"]
    assert raw == wordpiece_vocabulary(_bert_words(_train_corpus()), size, SPECIAL)
    assert list(raw)[-4:] == ["effusion", "is", "cardiomegaly", "clear"]  # counted by hand: 4, 4, then 3 each
    text = Tokenizer.from_file(str(paths["text"] / "tokenizer.json"))
    for sentence in _train_corpus():
        assert 1 not in text.encode(sentence).ids, sentence  # every corpus word spelt without [UNK]
    llm = Tokenizer.from_file(str(paths["llm"] / "tokenizer.json"))
    assert llm.get_vocab_size() == 60 == _config(paths["llm"])["vocab_size"]


# --------------------------------------------------------------------------- the LLM


def test_the_llm_is_an_untied_llama_with_pad_bos_eos_0_1_2(built):
    from transformers import LlamaForCausalLM

    from s2d_align.models.llm import load_llm

    config = _config(built["llm"])
    assert config["model_type"] == "llama"
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "max_position_embeddings", "pad_token_id", "bos_token_id",
                                   "eos_token_id", "tie_word_embeddings")} == {
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 96, "pad_token_id": 0, "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": False}
    weights = _weights(built["llm"])
    assert not torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    model, tokenizer = load_llm(str(built["llm"]))
    assert type(model) is LlamaForCausalLM
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert config["vocab_size"] == len(tokenizer) == model.config.vocab_size
    specials = [(t, tokenizer.convert_tokens_to_ids(t)) for t in ("<pad>", "<s>", "</s>", "<unk>")]
    assert specials == [("<pad>", 0), ("<s>", 1), ("</s>", 2), ("<unk>", 3)]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>", "<s>", "</s>", "<unk>")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0, 1, 2, 3)


def test_the_llm_tokenizer_is_metaspace_bpe_of_the_train_corpus(built):
    from s2d_align.models.llm import load_llm

    _, tokenizer = load_llm(str(built["llm"]))
    vocab = tokenizer.get_vocab()
    # impression, key phrase, prompt and instruction words are whole tokens: the vocabulary is not full
    assert tokenizer.tokenize("Zygomatic xiphoid Bilby Numbat lungs") == [
        "▁Zygomatic", "▁xiphoid", "▁Bilby", "▁Numbat", "▁lungs"]
    for word in ("Vallecula", "Valvular", "change", "Osteopenia", "Osteophytes"):  # val and test split only
        assert f"▁{word}" not in vocab and len(tokenizer.tokenize(word)) > 1, word
    text = "There is a small left pleural effusion. ASSISTANT:"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert "q" not in "".join(_train_corpus())
    assert tokenizer("q", add_special_tokens=False).input_ids == [vocab["▁"], 3]  # a character never seen: <unk>


# --------------------------------------------------------------------------- the builder's wiring and seeds


def test_the_llm_pretrains_on_the_train_studies_with_seeded_shuffled_phrases(manifest, tmp_path, recorded):
    from transformers import LlamaForCausalLM

    paths = build_tiny_models(tmp_path, manifest, seed=5, sizes=SIZES, prompt=PROMPT, instruction=INSTRUCTION)
    [call] = recorded
    rng = random.Random(5)
    expected = []
    for study in TRAIN:
        phrases = [k.text for k in study.key_phrases]
        rng.shuffle(phrases)
        expected.append((PROMPT, "; ".join(phrases), INSTRUCTION, study.findings))
    assert call["examples"] == expected
    assert [e[1] for e in expected] != ["; ".join(k.text for k in s.key_phrases) for s in TRAIN]  # really shuffled
    assert call["seed"] == 7 and call["sizes"] is SIZES
    assert type(call["model"]) is LlamaForCausalLM
    assert (call["model"].config.hidden_size, call["model"].config.num_hidden_layers) == (16, 1)
    assert call["tokenizer"].get_vocab() == json.loads((paths["llm"] / "tokenizer.json").read_text())["model"]["vocab"]
    _assert_same_weights(paths["llm"], call["model"], tmp_path / "passed")  # the model saved is the one pretrained


def test_the_defaults_are_seed_0_and_the_recipes_prompt(manifest, tmp_path, recorded):
    paths = build_tiny_models(tmp_path, manifest, sizes=NO_PRETRAINING)
    [call] = recorded
    assert call["seed"] == 2
    assert {e[0] for e in call["examples"]} == {PromptConfig.prompt}
    assert {e[2] for e in call["examples"]} == {PromptConfig.instruction}
    vocab = json.loads((paths["text"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab == wordpiece_vocabulary(_bert_words(_train_corpus(PromptConfig.prompt, PromptConfig.instruction)),
                                         500, SPECIAL)
    torch.manual_seed(0)
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config.from_pretrained(paths["vision"]))
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(0.0, 1.0)
    _assert_same_weights(paths["vision"], model, tmp_path / "expected")


def test_the_three_models_start_from_seed_seed_plus_1_and_seed_plus_2(manifest, tmp_path):
    from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

    paths = build_tiny_models(tmp_path, manifest, seed=3, sizes=NO_PRETRAINING, prompt=PROMPT, instruction=INSTRUCTION)
    torch.manual_seed(3)
    vision = Dinov2Model(Dinov2Config.from_pretrained(paths["vision"]))
    with torch.no_grad():
        vision.embeddings.position_embeddings.normal_(0.0, 1.0)
    _assert_same_weights(paths["vision"], vision, tmp_path / "reference" / "vision")
    torch.manual_seed(4)
    text = BertModel(BertConfig.from_pretrained(paths["text"]))
    _assert_same_weights(paths["text"], text, tmp_path / "reference" / "text")
    torch.manual_seed(5)
    llm = LlamaForCausalLM(LlamaConfig.from_pretrained(paths["llm"]))
    _assert_same_weights(paths["llm"], llm, tmp_path / "reference" / "llm")


def test_one_seed_gives_the_same_bytes_and_another_seed_other_weights(built, manifest, tmp_path):
    again = build_tiny_models(tmp_path / "again", manifest, seed=0, sizes=SIZES, prompt=PROMPT, instruction=INSTRUCTION)
    for name, folder in built.items():
        for path in folder.iterdir():
            assert (again[name] / path.name).read_bytes() == path.read_bytes(), (name, path.name)
    other = build_tiny_models(tmp_path / "other", manifest, seed=1, sizes=SIZES, prompt=PROMPT, instruction=INSTRUCTION)
    for name, key in (("vision", "embeddings.patch_embeddings.projection.weight"),
                      ("text", "embeddings.word_embeddings.weight"), ("llm", "model.embed_tokens.weight")):
        first, second = _weights(built[name]), _weights(other[name])
        assert first.keys() == second.keys() and not torch.equal(first[key], second[key]), name


def test_the_saved_llm_is_the_pretrained_one(built, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    LlamaForCausalLM(LlamaConfig.from_pretrained(built["llm"])).save_pretrained(tmp_path / "initial")
    initial, saved = _weights(tmp_path / "initial"), _weights(built["llm"])
    changed = [k for k in saved if not torch.equal(saved[k], initial[k])]
    assert set(changed) == set(saved)  # three steps of AdamW move every tensor


# --------------------------------------------------------------------------- wordpiece_vocabulary

WORDS = ["effusion", "small", "effusion", "left", "small", "effusion", "a", "ba", "ab", "b"]
CHARS = ["a", "b", "e", "f", "i", "l", "m", "n", "o", "s", "t", "u"]
BASE = ["[PAD]", "[UNK]", *CHARS, *(f"##{c}" for c in CHARS)]  # 26 entries


@pytest.mark.parametrize("size, words", [
    (100, ["effusion", "small", "ab", "ba", "left"]),  # by falling count, ties alphabetical; "a", "b" are characters
    (31, ["effusion", "small", "ab", "ba", "left"]),
    (30, ["effusion", "small", "ab", "ba"]),
    (28, ["effusion", "small"]),
    (27, ["effusion"]),
    (26, []),
    (10, []),  # the characters are never cut: any word can still be spelt
    (0, []),
])
def test_wordpiece_vocabulary_is_specials_characters_continuations_then_ranked_words(size, words):
    vocab = wordpiece_vocabulary(WORDS, size, ["[PAD]", "[UNK]"])
    assert vocab == {token: i for i, token in enumerate([*BASE, *words])}


def test_wordpiece_vocabulary_counts_once_what_is_already_an_entry():
    vocab = wordpiece_vocabulary(iter(WORDS), 100, ["[PAD]", "a", "effusion"])
    assert list(vocab) == ["[PAD]", "a", "effusion", *CHARS[1:], *(f"##{c}" for c in CHARS), "small", "ab", "ba",
                           "left"]
    assert list(vocab.values()) == list(range(len(vocab)))
    assert wordpiece_vocabulary([], 10, ["[PAD]", "[UNK]"]) == {"[PAD]": 0, "[UNK]": 1}
    assert list(wordpiece_vocabulary(["ba", "ab"], 100, [])) == ["a", "b", "##a", "##b", "ab", "ba"]


# --------------------------------------------------------------------------- _pretrain_language_model


class Recorder(torch.nn.Module):
    """One parameter; each forward records its inputs, the mode and the parameter, and returns the parameter as loss."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([0.5]))
        self.calls = []

    def forward(self, input_ids, attention_mask, labels):
        self.calls.append(SimpleNamespace(input_ids=input_ids.clone(), attention_mask=attention_mask.clone(),
                                          labels=labels.clone(), training=self.training,
                                          weight=self.weight.detach().clone()))
        return SimpleNamespace(loss=self.weight.sum())


def _word_tokenizer():
    """A word-level tokenizer that, like Llama's, adds BOS itself unless asked not to; pad is id 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "user", ":", "look", "clear", "lungs", ";", "effusion", "write", "it",
             "the", "are", "."]
    word_level = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    assert tokenizer("clear").input_ids == [1, 7] and tokenizer.pad_token_id == 3
    return tokenizer


EXAMPLES = [
    ("user : look", "clear lungs; effusion", "write it", "the lungs are clear ."),
    ("user : look", "", "write it", "clear ."),
    ("user : look", "effusion", "write it", "the effusion ."),
]
# BOS, each piece tokenised on its own (no BOS of its own), then the report and EOS; the report starts at START
ROWS = [
    [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 8, 14, 7, 15, 2],
    [1, 4, 5, 6, 11, 12, 7, 15, 2],
    [1, 4, 5, 6, 10, 11, 12, 13, 10, 15, 2],
]
STARTS = [10, 6, 7]


def test_pretraining_batches_pad_mask_and_label_the_report_and_eos_only():
    model = Recorder().eval()
    sizes = dataclasses.replace(SIZES, llm_pretrain_steps=5, llm_pretrain_batch=4)
    tiny._pretrain_language_model(model, _word_tokenizer(), EXAMPLES, sizes, seed=11)
    generator = torch.Generator().manual_seed(11)
    picks = [torch.randint(3, (4,), generator=generator).tolist() for _ in range(5)]
    assert len({tuple(p) for p in picks}) > 1 and len(model.calls) == 5
    for call, step in zip(model.calls, picks):
        width = max(len(ROWS[i]) for i in step)
        ids = [ROWS[i] + [3] * (width - len(ROWS[i])) for i in step]
        mask = [[1] * len(ROWS[i]) + [0] * (width - len(ROWS[i])) for i in step]
        labels = [[-100] * STARTS[i] + ROWS[i][STARTS[i]:] + [-100] * (width - len(ROWS[i])) for i in step]
        assert call.input_ids.tolist() == ids and call.input_ids.dtype == torch.long
        assert call.attention_mask.tolist() == mask and call.attention_mask.dtype == torch.long
        assert call.labels.tolist() == labels and call.labels.dtype == torch.long
        assert call.training
    assert not model.training


def test_pretraining_steps_adamw_on_a_one_cycle_schedule():
    """The recipe of the demo's text-only stage: AdamW (decay 0.01), one cycle up to 3e-3 over all the steps."""
    model = Recorder()
    sizes = dataclasses.replace(SIZES, llm_pretrain_steps=6, llm_pretrain_batch=2)
    tiny._pretrain_language_model(model, _word_tokenizer(), EXAMPLES, sizes, seed=0)
    weight = torch.nn.Parameter(torch.tensor([0.5]))
    optimizer = torch.optim.AdamW([weight], lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=6)
    expected = []
    for _ in range(6):
        expected.append(weight.detach().clone())
        weight.sum().backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    assert [c.weight for c in model.calls] == expected
    assert torch.equal(model.weight.detach(), weight.detach())


@pytest.mark.parametrize("steps, examples", [(0, EXAMPLES), (3, [])])
def test_no_steps_or_no_examples_leave_the_model_as_it_was(steps, examples):
    model = Recorder().train()
    tiny._pretrain_language_model(model, _word_tokenizer(), examples,
                                  dataclasses.replace(SIZES, llm_pretrain_steps=steps), seed=0)
    assert model.calls == [] and model.training and model.weight.item() == 0.5


def test_pretraining_lowers_the_report_loss_of_a_tiny_llama(built):
    from transformers import LlamaConfig, LlamaForCausalLM

    from s2d_align.models.llm import load_llm

    _, tokenizer = load_llm(str(built["llm"]))
    examples = [(PROMPT, "; ".join(k.text for k in s.key_phrases), INSTRUCTION, s.findings) for s in TRAIN]

    def report_loss(model) -> float:
        losses = []
        for *context, report in examples:
            prefix = [1] + [i for piece in context for i in tokenizer(piece, add_special_tokens=False).input_ids]
            target = tokenizer(report, add_special_tokens=False).input_ids + [2]
            with torch.no_grad():
                losses.append(model(input_ids=torch.tensor([prefix + target]),
                                    labels=torch.tensor([[-100] * len(prefix) + target])).loss.item())
        return sum(losses) / len(losses)

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=96, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    before = report_loss(model)
    tiny._pretrain_language_model(model, tokenizer, examples,
                                  dataclasses.replace(SIZES, llm_pretrain_steps=20, llm_pretrain_batch=3), seed=0)
    assert not model.training
    assert report_loss(model) < before - 0.5  # 5.3 -> 4.1 when measured
