"""CheXbert (Smit et al., EMNLP 2020): the learned CheXpert labeler most CE numbers in the literature come from.

The model is CheXbert's ``bert_labeler``: a BERT encoder (bert-base-uncased),
dropout 0.1 on the [CLS] state, then 14 linear heads in
:data:`s2d_align.chexpert.OBSERVATIONS` order -- 13 four-way heads (classes
blank, positive, negative, uncertain) and a two-way No Finding head (blank,
positive). We rebuild it here and load the published ``chexbert.pth``
(Stanford AIMI; also in the HF repo ``StanfordAIMI/RRG_scorers``), which holds
``{"model_state_dict": {"module.bert....", "module.linear_heads.N...."}, ...}``
as saved from ``nn.DataParallel``; it is read with
``torch.load(weights_only=True)``, so a checkpoint cannot run code.

Text goes in as CheXbert's own pipeline prepares it: surrounding whitespace
stripped, line breaks and runs of whitespace turned into one space, WordPiece
tokens of bert-base-uncased with [CLS] ... [SEP], cut to 512 tokens as
``tokens[:511] + [SEP]``; an empty report is ``[CLS] [SEP]``. Batches are
padded with the padding id under an attention mask, so a report's label does
not depend on its batch.

Neither the weights nor bert-base-uncased can be downloaded from here: give a
local ``chexbert.pth`` and a local bert-base-uncased folder (``config.json``
and the tokenizer files; its weights are not needed -- the checkpoint has
them).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

from s2d_align.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

# Head output class -> label, as CheXbert's label.py maps them.
FOUR_WAY = (None, POSITIVE, NEGATIVE, UNCERTAIN)
TWO_WAY = (None, POSITIVE)
MAX_TOKENS = 512


class CheXbert(nn.Module):
    """CheXbert's ``bert_labeler``: BERT, [CLS], dropout, 13 four-way heads and a two-way No Finding head."""

    def __init__(self, config) -> None:
        from transformers import BertModel

        super().__init__()
        self.bert = BertModel(config)  # with its pooler: the checkpoint carries the pooler weights
        self.dropout = nn.Dropout(0.1)
        hidden = config.hidden_size
        heads = [nn.Linear(hidden, 4) for _ in range(len(OBSERVATIONS) - 1)] + [nn.Linear(hidden, 2)]
        self.linear_heads = nn.ModuleList(heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        cls = self.dropout(hidden[:, 0])  # (B, H)
        return [head(cls) for head in self.linear_heads]  # 13 x (B, 4), then (B, 2)


def load_checkpoint(model: CheXbert, path: Path) -> None:
    """Load the published ``chexbert.pth`` (DataParallel ``module.`` prefixes, old LayerNorm names) into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CheXbert checkpoint (download chexbert.pth and pass its path)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unpickling errors; all mean "not a safe checkpoint"
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    state = data.get("model_state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (or {{'model_state_dict': ...}}) of tensors")
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        renamed[key] = value
    # Buffers that older transformers versions saved and newer ones rebuild.
    for buffer in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids"):
        renamed.pop(buffer, None)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(renamed)), sorted(set(renamed) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: not a CheXbert checkpoint: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: tensor shapes do not match the BERT config (is --bert-dir bert-base-uncased?): "
                         f"{str(err).splitlines()[-1].strip()}") from None


def prepare(text: str) -> str:
    """CheXbert's report clean-up: strip, and every run of whitespace (line breaks included) becomes one space."""
    return " ".join(text.split())


class CheXbertLabeler:
    """Label reports with CheXbert; ``label`` batches on ``device`` (CPU or GPU)."""

    name = "chexbert"

    def __init__(self, checkpoint: Path, bert_dir: Path, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        from transformers import AutoTokenizer, BertConfig

        bert_dir = Path(bert_dir)
        if not (bert_dir / "config.json").is_file():
            raise FileNotFoundError(f"{bert_dir}: needs a local bert-base-uncased folder with config.json and the "
                                    "tokenizer files (vocab.txt or tokenizer.json)")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        config = BertConfig.from_pretrained(bert_dir, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(bert_dir, local_files_only=True)
        self.max_tokens = min(MAX_TOKENS, config.max_position_embeddings)
        self.model = CheXbert(config)
        load_checkpoint(self.model, Path(checkpoint))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.version = f"chexbert.pth sha256:{_sha256(Path(checkpoint))[:12]}"

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per report: [CLS] WordPiece [SEP], at most ``max_tokens`` (CheXbert's truncation)."""
        encoded = self.tokenizer([prepare(t) for t in texts], add_special_tokens=True, truncation=True,
                                 max_length=self.max_tokens)
        return encoded["input_ids"]

    @torch.inference_mode()
    def predict_classes(self, texts: list[str]) -> list[list[int]]:
        """Each head's argmax class per report: (N, 14) nested lists."""
        ids = self.encode(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        classes: list[list[int] | None] = [None] * len(ids)
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            logits = self.model(input_ids.to(self.device), mask.to(self.device))
            argmax = torch.stack([head.argmax(dim=1) for head in logits], dim=1).cpu().tolist()  # (B, 14)
            for row, i in enumerate(batch):
                classes[i] = argmax[row]
        return classes  # type: ignore[return-value]

    def label(self, texts: list[str]) -> list[dict[str, int | None]]:
        """``{observation: 1 | 0 | -1 | None}`` per report, CheXbert's class-to-label mapping."""
        out = []
        for row in self.predict_classes(list(texts)):
            labels = {name: FOUR_WAY[c] for name, c in zip(OBSERVATIONS[:-1], row[:-1])}
            labels[OBSERVATIONS[-1]] = TWO_WAY[row[-1]]
            out.append(labels)
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
