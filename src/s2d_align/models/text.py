"""The frozen BERT text encoder E_t: reference reports (stage 2) and key phrases (stage 3) -> token features.

The default is CXR-BERT-specialized (paper: Implementation Details). Its hub
folder names custom classes (``CXRBertModel``, ``CXRBertTokenizer``) through
``auto_map``, so ``AutoModel`` would run the hub's ``modeling_cxrbert.py``:
code that differs between hub revisions (the older one fails on
transformers 5) and that a copied folder can replace with anything. Yet
its checkpoint is a BERT: the weights under ``bert.`` load into a plain
``BertModel`` (the MLM head ``cls.predictions.*`` and the contrastive
projection ``cls_projection_head.*`` are dropped), whose last hidden state
is CXRBertModel's, and its tokenizer is BERT's WordPiece on ``vocab.txt``.
So BERT-family folders load with transformers' own classes and no remote
code; other folders load through ``AutoModel``. Remote code runs only when
the caller passes ``trust_remote_code=True`` (the command line's
``--trust-remote-code``), never because a file says so.
"""

from __future__ import annotations

import torch
from torch import nn

# Keys of a BERT-family checkpoint that are not the encoder: MLM head, CXR-BERT's projection, pooler.
DROPPED_PREFIXES = ("cls.predictions.", "cls_projection_head.", "bert.pooler.", "pooler.")


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "TextEncoder":
        return super().train(False)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_t) token features."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def is_bert_family(config: dict) -> bool:
    """A config whose own class is custom code but whose weights are a BERT (CXR-BERT and kin)."""
    from transformers import CONFIG_MAPPING

    model_type = str(config.get("model_type", ""))
    if model_type == "bert":
        return True
    architectures = [str(a) for a in config.get("architectures") or ()]
    custom = model_type not in CONFIG_MAPPING or "auto_map" in config
    return custom and ("bert" in model_type.lower() or any("Bert" in a for a in architectures))


def bert_config(config: dict):
    """A ``BertConfig`` from a BERT-family ``config.json``, without the fields that name custom code."""
    from transformers import BertConfig

    return BertConfig.from_dict({k: v for k, v in config.items() if k not in ("auto_map", "architectures", "model_type")})


def load_bert_encoder(name_or_path: str, config: dict):
    """A plain ``BertModel`` (no pooler) from a BERT-family checkpoint: ``bert.`` stripped, heads dropped."""
    from transformers import BertModel

    model, info = BertModel.from_pretrained(
        name_or_path, config=bert_config(config), add_pooling_layer=False, output_loading_info=True
    )
    missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith(DROPPED_PREFIXES)]
    if missing or unexpected or info["mismatched_keys"]:
        raise ValueError(  # the hint first: the one-line load error keeps only the start of this
            f"not a BERT checkpoint, pass --trust-remote-code to use its own code (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, mismatched {list(info['mismatched_keys'])[:3]})"
        )
    return model


def load_bert_tokenizer(name_or_path: str):
    """BERT's WordPiece tokenizer from the folder's ``vocab.txt``/``tokenizer.json`` and its settings."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(name_or_path)
    # Without vocab.txt or tokenizer.json transformers builds a tokenizer of the special tokens alone,
    # which reads every word as [UNK]; say so instead of training on it.
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_tokens):
        raise ValueError(f"{name_or_path}: no tokenizer vocabulary (vocab.txt or tokenizer.json)")
    return tokenizer


def load_text_encoder(name_or_path: str, trust_remote_code: bool = False, key: str = "model.text.name_or_path"):
    """Load E_t and its tokenizer from a hub id or a local folder (``key`` names the setting in errors)."""
    from s2d_align.models.loading import explain_load_errors

    with explain_load_errors(key, name_or_path):
        return _load_text_encoder(name_or_path, trust_remote_code)


def text_hidden_size(name_or_path: str, key: str = "model.text.name_or_path") -> int:
    """E_t's feature width from its config alone (no weights, no code): what the connector needs."""
    from transformers import PretrainedConfig

    from s2d_align.models.loading import explain_load_errors

    with explain_load_errors(key, name_or_path):
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
        return int(config["hidden_size"])


def _load_text_encoder(name_or_path: str, trust_remote_code: bool):
    from transformers import AutoModel, AutoTokenizer, PretrainedConfig

    if not trust_remote_code:
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
        if is_bert_family(config):
            return TextEncoder(load_bert_encoder(name_or_path, config)), load_bert_tokenizer(name_or_path)
    model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return TextEncoder(model), tokenizer
