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
name. Table 4's other connectors, one per modality and with no shared memory
(their ``memory`` group is empty):

- ``mlp``: a two-layer MLP applied to every feature token (LLaVA-1.5's
  projector); the LLM reads as many tokens as the encoder gives.
- ``mlp_qformer``: a Q-Former (BLIP-2) -- ``num_memory`` learned queries per
  modality, ``qformer_layers`` blocks of query self-attention, cross-attention
  to the features and a feed-forward layer -- then the two-layer MLP.
- ``mlp_msa``: SMA's adapter without the memory: the features, projected to
  ``memory_dim``, attend to themselves (multi-head self-attention, residual),
  then the 3-layer MLP and LayerNorm; one token out per feature token.

The paper does not give their sizes; they take the SMA's widths from the
recipe so that a Table 4 row changes only the connector.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("image", "reference", "key_phrases")


def _three_layer_mlp(in_dim: int, hidden_size: int, out_dim: int) -> nn.Sequential:
    """The SMA adapter's 3-layer MLP (paper, Eq. 7)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, out_dim),
    )


class MemoryAdapter(nn.Module):
    """phi_m: memory queries attend to one modality's features; MLP + LayerNorm to the LLM width."""

    def __init__(self, in_dim: int, memory_dim: int, hidden_size: int, out_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(
            memory_dim, num_heads, kdim=in_dim, vdim=in_dim, dropout=dropout, batch_first=True
        )
        self.mlp = _three_layer_mlp(memory_dim, hidden_size, out_dim)
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
        self.num_memory = num_memory  # the grounding maps read it

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


def _projector(in_dim: int, hidden_size: int, out_dim: int) -> nn.Sequential:
    """LLaVA-1.5's two-layer MLP projector."""
    return nn.Sequential(nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, out_dim))


class _PerModality(nn.Module):
    """Base of the connectors with one independent module per modality and no shared memory."""

    adapters: nn.ModuleDict

    def parameter_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {"memory": []}
        for modality, adapter in self.adapters.items():
            groups[modality] = [f"adapters.{modality}.{n}" for n, _ in adapter.named_parameters()]
        return groups


class MLPConnector(_PerModality):
    """Table 4 "MLP": every feature token projected to the LLM width; padding stays masked."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, hidden_size: int, **_: object):
        super().__init__()
        self.adapters = nn.ModuleDict({m: _projector(dim, hidden_size, out_dim) for m, dim in in_dims.items()})

    def forward(self, modality: str, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.adapters[modality](features), mask


class QFormerBlock(nn.Module):
    """Queries attend to each other, then to the features, then a feed-forward layer (post-norm, as BLIP-2)."""

    def __init__(self, width: int, in_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(
            width, num_heads, kdim=in_dim, vdim=in_dim, dropout=dropout, batch_first=True
        )
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.norms = nn.ModuleList([nn.LayerNorm(width) for _ in range(3)])

    def forward(self, queries: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.norms[0](queries + self.self_attention(queries, queries, queries, need_weights=False)[0])
        attended = self.cross_attention(queries, features, features, key_padding_mask=~mask, need_weights=False)[0]
        queries = self.norms[1](queries + attended)
        return self.norms[2](queries + self.feed_forward(queries))


class QFormerAdapter(nn.Module):
    def __init__(self, in_dim: int, num_queries: int, width: int, layers: int, hidden_size: int, out_dim: int,
                 num_heads: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, width))
        self.blocks = nn.ModuleList([QFormerBlock(width, in_dim, num_heads, dropout) for _ in range(layers)])
        self.projector = _projector(width, hidden_size, out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, features, mask)
        return self.projector(queries)  # (B, n_q, d_llm)


class QFormerConnector(_PerModality):
    """Table 4 "MLP + Q-Former": a Q-Former per modality compresses the features to ``num_memory`` tokens."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, num_memory: int, memory_dim: int, hidden_size: int,
                 num_heads: int, dropout: float, qformer_layers: int, **_: object):
        super().__init__()
        self.adapters = nn.ModuleDict({
            m: QFormerAdapter(dim, num_memory, memory_dim, qformer_layers, hidden_size, out_dim, num_heads, dropout)
            for m, dim in in_dims.items()
        })

    def forward(self, modality: str, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.adapters[modality](features, mask)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class SelfAttentionAdapter(nn.Module):
    """SMA's adapter with the features as their own queries: LN(MLP(X + MSA(X))), X the projected features."""

    def __init__(self, in_dim: int, memory_dim: int, hidden_size: int, out_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.inputs = nn.Linear(in_dim, memory_dim)
        self.attention = nn.MultiheadAttention(memory_dim, num_heads, dropout=dropout, batch_first=True)
        self.mlp = _three_layer_mlp(memory_dim, hidden_size, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.inputs(features)
        attended, _ = self.attention(x, x, x, key_padding_mask=~mask, need_weights=False)
        return self.norm(self.mlp(x + attended))


class MSAConnector(_PerModality):
    """Table 4 "MLP + MSA": SMA without memory; one output token per feature token."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, memory_dim: int, hidden_size: int, num_heads: int,
                 dropout: float, **_: object):
        super().__init__()
        self.adapters = nn.ModuleDict({
            m: SelfAttentionAdapter(dim, memory_dim, hidden_size, out_dim, num_heads, dropout) for m, dim in in_dims.items()
        })

    def forward(self, modality: str, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.adapters[modality](features, mask), mask


def build_connector(kind: str, in_dims: dict[str, int], out_dim: int, **settings) -> nn.Module:
    """The connector named by ``model.connector.kind``."""
    if kind in ("sma", "sma_unshared"):
        settings.pop("qformer_layers", None)
        return SMA(in_dims, out_dim, shared=kind == "sma", **settings)
    if kind == "mlp":
        return MLPConnector(in_dims, out_dim, **settings)
    if kind == "mlp_qformer":
        return QFormerConnector(in_dims, out_dim, **settings)
    if kind == "mlp_msa":
        return MSAConnector(in_dims, out_dim, **settings)
    raise ValueError(f"unknown connector kind {kind!r}")
