"""Grounding maps: where on the radiograph the model looked for each sentence of its report.

The image reaches the LLM only through the SMA's ``n_m`` memory tokens Z_v
(paper, Eq. 6-7): memory query j cross-attends to the image patches with
weights ``A_sma[j, p]`` (averaged over heads; each row sums to 1 over the
patches of all views). While writing a report token, the LLM attends to the
prefix; the share of that attention that goes to memory token j, averaged
over layers and heads and renormalised over the memory tokens, is
``w[t, j]``. A sentence's map is the attention-rollout product of the two::

    map_s[p] = mean over the sentence's tokens t of  sum_j w[t, j] * A_sma[j, p]

It sums to 1 over patches; one :class:`SentenceMap` per sentence and view,
renormalised within the view. The attention that writes token t is the one
of the position just before it, i.e. the query that predicts t.

This is attention, not attribution: it says what the memory read and what
the LLM read from the memory, not what changed the words. Only the SMA
connectors (``sma``, ``sma_unshared``) have memory queries to follow.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (split after . ! ? and whitespace)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def token_sentences(tokenizer, ids: list[int], text: str) -> list[int]:
    """For each generated token, the index of the sentence it belongs to (-1: special or whitespace only)."""
    spans = split_sentences(text)
    owners = []
    for k in range(len(ids)):
        end = len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True).strip())
        previous = len(tokenizer.decode(ids[:k], skip_special_tokens=True).strip()) if k else 0
        if end == previous:
            owners.append(-1)
            continue
        position = end - 1
        owners.append(next((i for i, (a, b) in enumerate(spans) if a <= position < b), -1))
    return owners


def memory_to_patches(model, pixel_values: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """SMA cross-attention of the image adapter: (B, n_m, I*N), rows summing to 1 over real patches."""
    connector = model.connector
    if not hasattr(connector, "memory_for"):
        raise ValueError(
            f"grounding maps need the SMA's memory queries; this model's connector is {type(connector).__name__}"
        )
    batch, views = pixel_values.shape[:2]
    patches = model.vision(pixel_values.flatten(0, 1))  # (B*I, N, d_v)
    patches = patches.reshape(batch, views * patches.shape[1], patches.shape[2])  # (B, I*N, d_v)
    mask = image_mask.repeat_interleave(patches.shape[1] // views, dim=1)  # (B, I*N)
    adapter = connector.adapters["image"]
    queries = connector.memory_for("image").unsqueeze(0).expand(batch, -1, -1)  # (B, n_m, d_m)
    _, weights = adapter.attention(
        queries, patches, patches, key_padding_mask=~mask, need_weights=True, average_attn_weights=True
    )
    return weights  # (B, n_m, I*N)


def report_to_memory(model, pixel_values: torch.Tensor, image_mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """LLM attention from the positions that write each report token to the memory tokens: (L, n_m), rows sum to 1."""
    embeds, mask = model.prefix({"pixel_values": pixel_values, "image_mask": image_mask}, ("image",))  # (1, P, D)
    report = model.llm.get_input_embeddings()(ids.unsqueeze(0))  # (1, L, D)
    inputs = torch.cat([embeds, report.to(embeds.dtype)], dim=1)
    attention = torch.cat([mask, torch.ones_like(ids, dtype=torch.bool).unsqueeze(0)], dim=1).long()
    config = model.llm.get_base_model().config
    previous = config._attn_implementation
    config._attn_implementation = "eager"  # fused kernels return no attention weights
    try:
        out = model.llm(inputs_embeds=inputs, attention_mask=attention, output_attentions=True)
    finally:
        config._attn_implementation = previous
    stacked = torch.stack([a[0] for a in out.attentions])  # (layers, heads, P+L, P+L)
    start = model.prompt_ids.numel()
    n_m = model.connector.num_memory
    prefix = embeds.shape[1]
    writers = torch.arange(prefix - 1, prefix - 1 + ids.numel())  # position t-1 writes token t
    to_memory = stacked[:, :, writers, start : start + n_m].float().mean(dim=(0, 1))  # (L, n_m)
    return to_memory / to_memory.sum(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def sentence_maps(generator, pixel_values: torch.Tensor, image_mask: torch.Tensor, ids: torch.Tensor, text: str):
    """One study (pixels (1, I, 3, H, W)) and its generated ids (L,) -> a :class:`SentenceMap` per sentence and view."""
    from s2d_align.inference.api import SentenceMap

    model = generator.model
    device = generator.device
    pixel_values, image_mask = pixel_values.to(device), image_mask.to(device)
    tokenizer = generator.built.tokenizers.llm
    keep = [i for i, t in enumerate(ids.tolist()) if t != model.pad_token_id and t != model.eos_token_id]
    ids = ids[: keep[-1] + 1] if keep else ids[:0]
    if ids.numel() == 0:
        return []
    owners = token_sentences(tokenizer, ids.tolist(), text)
    sma = memory_to_patches(model, pixel_values, image_mask)[0].float()  # (n_m, I*N)
    llm = report_to_memory(model, pixel_values, image_mask, ids.to(device))  # (L, n_m)
    per_token = llm @ sma  # (L, I*N)
    views = int(image_mask[0].sum())
    total_views = image_mask.shape[1]
    n = per_token.shape[1] // total_views
    height, width = pixel_values.shape[-2:]
    rows = max(1, round((n * height / width) ** 0.5))
    cols = n // rows
    spans = split_sentences(text)
    maps = []
    for s, (a, b) in enumerate(spans):
        tokens = [k for k, owner in enumerate(owners) if owner == s]
        if not tokens:
            continue
        heat = per_token[tokens].mean(dim=0)  # (I*N,)
        for v in range(views):
            part = heat[v * n : (v + 1) * n].cpu().numpy().astype(np.float64)
            part = part / part.sum() if part.sum() > 0 else np.full_like(part, 1.0 / part.size)
            maps.append(SentenceMap(sentence=text[a:b].strip(), map=part.reshape(rows, cols), view=v))
    return maps


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The radiograph in gray with ``heat`` (h, w) upsampled over it in a red-yellow colour map (RGB)."""
    try:
        from matplotlib import colormaps
    except ImportError as err:
        raise ImportError("grounding overlays need matplotlib: pip install 's2d-align[report]'") from err

    base = image.convert("L").convert("RGB")
    scaled = heat / heat.max() if heat.max() > 0 else heat
    colours = (colormaps["inferno"](scaled)[..., :3] * 255).astype(np.uint8)  # (h, w, 3)
    layer = Image.fromarray(colours, mode="RGB").resize(base.size, Image.BILINEAR)
    return Image.blend(base, layer, alpha)
