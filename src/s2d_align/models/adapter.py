"""Connectors from encoder features to LLM tokens; the paper's SMA (Shallow-to-Deep Memory Adapter).

SMA (paper, Eq. 6-7): one learnable memory bank M of ``num_memory`` queries is
shared by one adapter per modality -- phi_v for images, phi_r for reference
reports, phi_k for key phrases. Each adapter has its own parameters: an 8-head
cross-attention whose queries are M and whose keys and values are that
modality's features, then a 3-layer MLP and a LayerNorm that project to the
LLM's embedding width. Every adapter emits ``num_memory`` tokens. Because M is
shared across adapters and carried from stage to stage, what stage 2 and 3
teach M about reports and phrases stays in the queries that read the image at
inference.

The paper's Eq. 6 was lost in extraction; we add the cross-attention output to
its queries (a residual, as in every transformer block) before the MLP. The
memory starts at unit scale, N(0, 1), as DETR's learned queries do: with the
0.02 scale common for embeddings, every query starts by averaging the image
uniformly and takes far longer to learn to look at a region.

Every connector answers ``forward(modality, features, mask) -> (tokens, mask)``
and ``parameter_groups()``, so the curriculum can say what trains by group
name and the connector ablations of Table 4 can slot in.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("image", "reference", "key_phrases")


class MemoryAdapter(nn.Module):
    """phi_m: memory queries attend to one modality's features; MLP + LayerNorm to the LLM width."""

    def __init__(self, in_dim: int, memory_dim: int, hidden_size: int, out_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(
            memory_dim, num_heads, kdim=in_dim, vdim=in_dim, dropout=dropout, batch_first=True
        )
        self.mlp = nn.Sequential(
            nn.Linear(memory_dim, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, out_dim),
        )
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, memory: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # memory (n_m, d_m); features (B, N, d_in); mask (B, N), True where a feature is real
        queries = memory.unsqueeze(0).expand(features.shape[0], -1, -1)  # (B, n_m, d_m)
        attended, _ = self.attention(queries, features, features, key_padding_mask=~mask, need_weights=False)
        return self.norm(self.mlp(queries + attended))  # (B, n_m, d_llm)


class SMA(nn.Module):
    """The Shallow-to-Deep Memory Adapter; ``shared=False`` gives each adapter its own memory (Table 4 ablation)."""

    def __init__(
        self,
        in_dims: dict[str, int],
        out_dim: int,
        num_memory: int,
        memory_dim: int,
        hidden_size: int,
        num_heads: int,
        dropout: float,
        shared: bool = True,
    ):
        super().__init__()
        self.shared = shared
        self.num_memory = num_memory

        def bank() -> nn.Parameter:
            return nn.Parameter(torch.randn(num_memory, memory_dim))

        if shared:
            self.memory = bank()
        else:
            self.memories = nn.ParameterDict({m: bank() for m in in_dims})
        self.adapters = nn.ModuleDict(
            {
                m: MemoryAdapter(dim, memory_dim, hidden_size, out_dim, num_heads, dropout)
                for m, dim in in_dims.items()
            }
        )

    def memory_for(self, modality: str) -> torch.Tensor:
        return self.memory if self.shared else self.memories[modality]

    def forward(self, modality: str, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.adapters[modality](self.memory_for(modality), features, mask)  # (B, n_m, d_llm)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter names by curriculum group: ``memory`` (the shared bank) and one group per modality."""
        groups: dict[str, list[str]] = {"memory": ["memory"] if self.shared else []}
        for modality in self.adapters:
            names = [f"adapters.{modality}.{n}" for n, _ in self.adapters[modality].named_parameters()]
            if not self.shared:
                names.append(f"memories.{modality}")
            groups[modality] = names
        return groups


def build_connector(kind: str, in_dims: dict[str, int], out_dim: int, **settings) -> nn.Module:
    """The connector named by ``model.connector.kind``."""
    if kind in ("sma", "sma_unshared"):
        return SMA(in_dims, out_dim, shared=kind == "sma", **settings)
    raise ValueError(f"unknown connector kind {kind!r}")
