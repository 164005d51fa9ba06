"""Real-shaped random stand-ins for the recipe's base models, laid out as their hub folders are.

The shipped recipes name ``microsoft/rad-dino``,
``microsoft/BiomedVLP-CXR-BERT-specialized`` and ``lmsys/vicuna-7b-v1.5``
(paper: Implementation Details). No machine here reaches the hub, and the
tiny models of :mod:`s2d_align.models.tiny` share only the families of the
real ones, not their shapes, file layouts or tokenizers; several real-run
defects only show with those. So this module writes random models with the
exact configs of the real ones and the files their hub folders hold:

- ``vision``: DINOv2 ViT-B/14 at 518 px (Rad-DINO's ``config.json``) and its
  ``BitImageProcessor`` ``preprocessor_config.json``;
- ``text``: CXR-BERT-specialized's layout: a ``config.json`` whose
  ``auto_map`` names its custom ``CXRBertConfig``/``CXRBertModel``, a
  ``tokenizer_config.json`` naming ``CXRBertTokenizer``, a WordPiece
  ``vocab.txt`` of its 30522 entries, a ``pytorch_model.bin`` with the
  checkpoint's key names (``bert.*``, ``cls.predictions.*``,
  ``cls_projection_head.*``), and an *older* ``modeling_cxrbert.py`` whose
  ``CXRBertOutput`` lacks ``@dataclass`` (it fails on transformers 5 if run);
- ``llm``: Vicuna-7B v1.5's config (hidden 4096, 32000 vocab, ...) at
  ``llm_layers`` layers, fp16 weights, and only a sentencepiece
  ``tokenizer.model`` with the hub's ``tokenizer_config.json`` and
  ``special_tokens_map.json`` (no ``tokenizer.json``). The sentencepiece
  model is trained here on radiology-like text with Llama's settings
  (BPE, byte fallback, ``<unk>``/``<s>``/``</s>`` = 0/1/2) but a small
  vocabulary: the embedding keeps Vicuna's 32000 rows.

``vision_layers`` and ``text_layers`` default to the real 12; tests that only
need the shapes of the interfaces may pass fewer to save CPU time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

RAD_DINO_CONFIG = {
    "architectures": ["Dinov2Model"],
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "image_size": 518,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "model_type": "dinov2",
    "num_attention_heads": 12,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 14,
    "qkv_bias": True,
    "use_swiglu_ffn": False,
}
RAD_DINO_PREPROCESSOR = {
    "crop_size": {"height": 518, "width": 518},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5307, 0.5307, 0.5307],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.2583, 0.2583, 0.2583],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 518},
}
CXR_BERT_CONFIG = {
    "architectures": ["CXRBertModel"],
    "auto_map": {"AutoConfig": "configuration_cxrbert.CXRBertConfig", "AutoModel": "modeling_cxrbert.CXRBertModel"},
    "attention_probs_dropout_prob": 0.25,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.25,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "cxr-bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "projection_size": 128,
    "torch_dtype": "float32",
    "transformers_version": "4.17.0.dev0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}
CXR_BERT_TOKENIZER_CONFIG = {
    "auto_map": {"AutoTokenizer": ["tokenization_cxrbert.CXRBertTokenizer", None]},
    "do_lower_case": True,
    "model_max_length": 512,
    "tokenizer_class": "CXRBertTokenizer",
}
VICUNA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pad_token_id": 0,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0",
    "use_cache": True,
    "vocab_size": 32000,
}
HUB_ONLY_KEYS = ("architectures", "auto_map", "model_type", "torch_dtype", "transformers_version")


def hub_configs(llm_layers: int = 32):
    """The three base models' configs as ``transformers`` objects, Vicuna at ``llm_layers`` layers.

    For shape-only work (cost model, FLOP counts on the meta device, the GPU
    check): no files, no weights. The keys that name hub classes or versions
    are dropped; CXR-BERT is then a plain ``BertConfig``.
    """
    from transformers import BertConfig, Dinov2Config, LlamaConfig

    def fields(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in HUB_ONLY_KEYS}

    return (
        Dinov2Config(**fields(RAD_DINO_CONFIG)),
        BertConfig(**fields(CXR_BERT_CONFIG)),
        LlamaConfig(**{**fields(VICUNA_CONFIG), "num_hidden_layers": llm_layers}),
    )


VICUNA_GENERATION_CONFIG = {
    "bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "max_length": 4096,
    "pad_token_id": 0, "temperature": 0.9, "top_p": 0.6,
}


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
            "rstrip": False, "single_word": False}


VICUNA_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": _added("<s>"),
    "clean_up_tokenization_spaces": False,
    "eos_token": _added("</s>"),
    "legacy": False,
    "model_max_length": 4096,
    "pad_token": None,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": _added("<unk>"),
}
VICUNA_SPECIAL_TOKENS = {"bos_token": _added("<s>"), "eos_token": _added("</s>"), "pad_token": "<unk>",
                         "unk_token": _added("<unk>")}

# Radiology-like text for the stand-in tokenizers (a real tokenizer knows these words).
CORPUS = [
    "The lungs are clear.", "There is a small left pleural effusion.", "Mild cardiomegaly is present.",
    "No pneumothorax is seen.", "Right lower lobe opacity may represent atelectasis or pneumonia.",
    "Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
    "There is no focal consolidation, pleural effusion or pneumothorax.",
    "Median sternotomy wires and mediastinal clips are noted.", "Degenerative changes of the thoracic spine.",
    "Bibasilar atelectasis is unchanged compared to the prior study.",
    "An endotracheal tube terminates 4 cm above the carina.", "Pulmonary vascular congestion with mild edema.",
    "Hilar contours are normal. No acute osseous abnormality.",
    "USER: Here is a chest X-ray.", "Write the FINDINGS section of its radiology report. ASSISTANT:",
    "As compared to the previous radiograph, there is no relevant change.",
]

# The older published remote code: CXRBertOutput has no @dataclass, which
# transformers 5's ModelOutput rejects when the class is defined.
MODELING_CXRBERT_OLD = '''"""CXR-BERT model (older published version)."""
from typing import Any, Optional, Tuple, Union

import torch
from torch import nn
from torch import Tensor as T
from transformers import BertForMaskedLM
from transformers.modeling_outputs import ModelOutput

from .configuration_cxrbert import CXRBertConfig

BERTTupleOutput = Tuple[T, T, T, T, T]


class CXRBertOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor
    logits: torch.FloatTensor
    cls_projected_embedding: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor]] = None
    attentions: Optional[Tuple[torch.FloatTensor]] = None


class BertProjectionHead(nn.Module):
    def __init__(self, config: CXRBertConfig) -> None:
        super().__init__()
        self.dense_to_hidden = nn.Linear(config.hidden_size, config.projection_size)
        self.transform_act_fn = nn.functional.gelu
        self.LayerNorm = nn.LayerNorm(config.projection_size, eps=1e-12)
        self.dense_to_output = nn.Linear(config.projection_size, config.projection_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dense_to_hidden(hidden_states)
        hidden_states = self.transform_act_fn(hidden_states)
        hidden_states = self.LayerNorm(hidden_states)
        hidden_states = self.dense_to_output(hidden_states)
        return hidden_states


class CXRBertModel(BertForMaskedLM):
    config_class = CXRBertConfig
    _keys_to_ignore_on_load_missing = [r"position_ids", r"predictions.decoder.bias", r"cls_projection_head"]

    def __init__(self, config: CXRBertConfig):
        super().__init__(config)
        self.cls_projection_head = BertProjectionHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                output_attentions=False, output_hidden_states=False, output_cls_projected_embedding=None,
                return_dict=None, **kwargs: Any) -> Union[BERTTupleOutput, CXRBertOutput]:
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        bert_for_masked_lm_output = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                                    token_type_ids=token_type_ids, position_ids=position_ids,
                                                    output_attentions=output_attentions,
                                                    output_hidden_states=True, return_dict=True)
        last_hidden_state = bert_for_masked_lm_output.hidden_states[-1]
        cls_projected_embedding = (self.cls_projection_head(last_hidden_state[:, 0, :])
                                   if output_cls_projected_embedding else None)
        if return_dict:
            return CXRBertOutput(last_hidden_state=last_hidden_state, logits=bert_for_masked_lm_output.logits,
                                 cls_projected_embedding=cls_projected_embedding,
                                 hidden_states=bert_for_masked_lm_output.hidden_states if output_hidden_states else None,
                                 attentions=bert_for_masked_lm_output.attentions)
        return (last_hidden_state, bert_for_masked_lm_output.logits, cls_projected_embedding,
                bert_for_masked_lm_output.hidden_states, bert_for_masked_lm_output.attentions)

    def get_projected_text_embeddings(self, input_ids, attention_mask, normalize_embeddings=True):
        outputs = self.forward(input_ids=input_ids, attention_mask=attention_mask,
                               output_cls_projected_embedding=True, return_dict=True)
        assert isinstance(outputs, CXRBertOutput)
        cls_projected_embedding = outputs.cls_projected_embedding
        if normalize_embeddings:
            return nn.functional.normalize(cls_projected_embedding, dim=1)
        return cls_projected_embedding
'''
CONFIGURATION_CXRBERT = '''"""CXR-BERT configuration."""
from transformers import BertConfig


class CXRBertConfig(BertConfig):
    model_type = "cxr-bert"

    def __init__(self, projection_size: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.projection_size = projection_size
'''
TOKENIZATION_CXRBERT = '''"""CXR-BERT tokenizer: BERT WordPiece."""
from transformers import BertTokenizer


class CXRBertTokenizer(BertTokenizer):
    pass
'''


def build_standins(
    out: Path,
    llm_layers: int = 2,
    seed: int = 0,
    vision_layers: int = 12,
    text_layers: int = 12,
    corpus: Iterable[str] = (),
) -> dict[str, Path]:
    """Write ``out/vision``, ``out/text`` and ``out/llm`` as the three hub folders; return their paths.

    ``corpus`` adds text (e.g. a manifest's reports) to what the tokenizers learn from.
    """
    out = Path(out)
    text = CORPUS + [t for t in corpus if t]
    paths = {"vision": out / "vision", "text": out / "text", "llm": out / "llm"}
    build_rad_dino(paths["vision"], seed, vision_layers)
    build_cxr_bert(paths["text"], text, seed + 1, text_layers)
    build_vicuna(paths["llm"], text, seed + 2, llm_layers)
    return paths


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def build_rad_dino(path: Path, seed: int = 0, layers: int = 12) -> None:
    """Rad-DINO: ``Dinov2Model`` with its exact config (``layers`` aside) and its image processor."""
    from transformers import Dinov2Config, Dinov2Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**{**RAD_DINO_CONFIG, "num_hidden_layers": layers}))
    model.save_pretrained(path)
    _write_json(path / "preprocessor_config.json", RAD_DINO_PREPROCESSOR)


def cxr_bert_state_dict(model, projection_size: int = 128) -> dict[str, torch.Tensor]:
    """The checkpoint's keys from a ``BertForMaskedLM`` plus a random ``cls_projection_head``."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    hidden = model.config.hidden_size
    head = {
        "dense_to_hidden": torch.nn.Linear(hidden, projection_size),
        "LayerNorm": torch.nn.LayerNorm(projection_size),
        "dense_to_output": torch.nn.Linear(projection_size, projection_size),
    }
    for name, module in head.items():
        for key, value in module.state_dict().items():
            state[f"cls_projection_head.{name}.{key}"] = value.detach().clone()
    return state


def build_cxr_bert(path: Path, corpus: list[str], seed: int = 0, layers: int = 12) -> None:
    """CXR-BERT-specialized: custom-code config, ``CXRBertTokenizer``, ``pytorch_model.bin``, old remote code."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM

    path.mkdir(parents=True, exist_ok=True)
    config = {**CXR_BERT_CONFIG, "num_hidden_layers": layers}
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=special))
    learned = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])
    vocab = [token for token, _ in learned]
    vocab += [f"[unused{i}]" for i in range(config["vocab_size"] - len(vocab))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    _write_json(path / "tokenizer_config.json", CXR_BERT_TOKENIZER_CONFIG)
    _write_json(path / "special_tokens_map.json", {"cls_token": "[CLS]", "mask_token": "[MASK]",
                                                   "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"})
    _write_json(path / "config.json", config)
    (path / "configuration_cxrbert.py").write_text(CONFIGURATION_CXRBERT)
    (path / "modeling_cxrbert.py").write_text(MODELING_CXRBERT_OLD)
    (path / "tokenization_cxrbert.py").write_text(TOKENIZATION_CXRBERT)
    torch.manual_seed(seed)
    bert_kwargs = {k: v for k, v in config.items() if k not in ("architectures", "auto_map", "model_type")}
    model = BertForMaskedLM(BertConfig(**bert_kwargs))
    torch.save(cxr_bert_state_dict(model, config["projection_size"]), path / "pytorch_model.bin")


def build_vicuna(path: Path, corpus: list[str], seed: int = 0, layers: int = 2) -> None:
    """Vicuna-7B v1.5 at ``layers`` layers, fp16, with only a sentencepiece ``tokenizer.model``."""
    import io

    try:
        import sentencepiece as spm
    except ImportError as exc:  # a core dependency; say so plainly if an install lacks it
        raise ImportError("building the Vicuna stand-in needs the sentencepiece package") from exc
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model_bytes, model_type="bpe", vocab_size=600,
        hard_vocab_limit=False, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2, num_threads=1,
    )
    (path / "tokenizer.model").write_bytes(model_bytes.getvalue())
    _write_json(path / "tokenizer_config.json", VICUNA_TOKENIZER_CONFIG)
    _write_json(path / "special_tokens_map.json", VICUNA_SPECIAL_TOKENS)
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in VICUNA_CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype",
                                                                  "transformers_version")}
    config = LlamaConfig(**{**kwargs, "num_hidden_layers": layers})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(path)
    _write_json(path / "generation_config.json", VICUNA_GENERATION_CONFIG)
