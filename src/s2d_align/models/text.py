"""The frozen BERT text encoder E_t: reference reports (stage 2) and key phrases (stage 3) -> token features.

The default is CXR-BERT-specialized, which ships its own model code
(``trust_remote_code``); any ``transformers.AutoModel`` whose output has
``last_hidden_state`` works. Like the vision encoder it stays frozen.
"""

from __future__ import annotations

import torch
from torch import nn


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


def load_text_encoder(name_or_path: str, trust_remote_code: bool = False):
    """Load E_t and its tokenizer from a hub id or a local folder."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return TextEncoder(model), tokenizer
