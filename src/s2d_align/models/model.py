"""S2D-Align assembled: encoders -> SMA -> LLM, with the loss of Eq. 4 and generation of Eq. 5.

The LLM reads one sequence per study::

    [BOS] prompt | Z_v [| Z_r [| Z_k]] | instruction | report [EOS]

where Z_v, Z_r and Z_k are the adapter tokens of the image, the reference
report and the key phrases. Which of them are present is the stage's
*context*. The loss is the cross-entropy of the report tokens and EOS only.

Generation (Eq. 5) conditions on Z_v alone. :meth:`S2DAlign.generate` takes
pixel values and nothing else, so it cannot read auxiliary signals even by
accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from s2d_align.models.adapter import MODALITIES, build_connector
from s2d_align.models.llm import add_lora, load_llm
from s2d_align.models.text import TextEncoder, load_text_encoder
from s2d_align.models.vision import ImagePreprocessor, VisionEncoder, load_vision_encoder


@dataclass
class Tokenizers:
    llm: object  # the LLM's tokenizer: prompts and reports
    text: object  # the text encoder's tokenizer: reference reports and key phrases


def parse_context(context: str) -> tuple[str, ...]:
    """``"image+reference"`` -> ``("image", "reference")``, validated and in canonical order."""
    parts = tuple(p.strip() for p in context.split("+") if p.strip())
    unknown = [p for p in parts if p not in MODALITIES]
    if unknown or "image" not in parts or len(set(parts)) != len(parts):
        raise ValueError(
            f"context {context!r}: must be '+'-joined distinct names from {MODALITIES} and include 'image'"
        )
    return tuple(m for m in MODALITIES if m in parts)


class S2DAlign(nn.Module):
    def __init__(
        self,
        vision: VisionEncoder,
        text: TextEncoder | None,
        connector: nn.Module,
        llm: nn.Module,
        prompt_ids: torch.Tensor,
        instruction_ids: torch.Tensor,
        eos_token_id: int,
        pad_token_id: int,
    ):
        super().__init__()
        self.vision = vision
        self.text = text
        self.connector = connector
        self.llm = llm
        self.register_buffer("prompt_ids", prompt_ids, persistent=False)
        self.register_buffer("instruction_ids", instruction_ids, persistent=False)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    # ------------------------------------------------------------------ context

    def image_tokens(self, pixel_values: torch.Tensor, image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, I, 3, H, W) images -> Z_v (B, n_m, D): all views of a study feed one adapter call."""
        batch, views = pixel_values.shape[:2]
        patches = self.vision(pixel_values.flatten(0, 1))  # (B*I, N, d_v)
        patches = patches.reshape(batch, views * patches.shape[1], patches.shape[2])  # (B, I*N, d_v)
        mask = image_mask.repeat_interleave(patches.shape[1] // views, dim=1)  # (B, I*N)
        return self.connector("image", patches, mask)

    def text_tokens(self, modality: str, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Reference report or key phrases (B, T) -> Z_r or Z_k (B, n_m, D)."""
        features = self.text(input_ids, attention_mask)  # (B, T, d_t)
        return self.connector(modality, features, attention_mask.bool())

    def prefix(self, batch: dict, context: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and mask of everything before the report: prompt, adapter tokens, instruction."""
        embed = self.llm.get_input_embeddings()
        size = batch["pixel_values"].shape[0]
        parts = [self.image_tokens(batch["pixel_values"], batch["image_mask"])]
        if "reference" in context:
            parts.append(self.text_tokens("reference", batch["reference_ids"], batch["reference_mask"]))
        if "key_phrases" in context:
            parts.append(self.text_tokens("key_phrases", batch["key_phrase_ids"], batch["key_phrase_mask"]))
        prompt = embed(self.prompt_ids).unsqueeze(0).expand(size, -1, -1)  # (B, P0, D)
        instruction = embed(self.instruction_ids).unsqueeze(0).expand(size, -1, -1)  # (B, P1, D)
        dtype = prompt.dtype
        embeds = torch.cat([prompt, *(tokens.to(dtype) for tokens, _ in parts), instruction], dim=1)  # (B, P, D)
        ones = lambda t: torch.ones(size, t.shape[1], dtype=torch.bool, device=t.device)  # noqa: E731
        mask = torch.cat([ones(prompt), *(m for _, m in parts), ones(instruction)], dim=1)  # (B, P)
        return embeds, mask

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict, context: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-study summed report-token cross-entropy (B,) and report-token counts (B,) (Eq. 4, 9-11)."""
        embeds, mask = self.prefix(batch, context)
        report_ids, report_mask = batch["report_ids"], batch["report_mask"]  # (B, L)
        report_embeds = self.llm.get_input_embeddings()(report_ids)
        inputs = torch.cat([embeds, report_embeds], dim=1)  # (B, P+L, D)
        attention = torch.cat([mask, report_mask.bool()], dim=1)
        positions = (attention.long().cumsum(dim=1) - 1).clamp(min=0)
        length = report_ids.shape[1]
        # Only the positions that predict report tokens need logits: the last L+1.
        out = self.llm(
            inputs_embeds=inputs, attention_mask=attention.long(), position_ids=positions, logits_to_keep=length + 1
        )
        logits = out.logits[:, :-1].float()  # (B, L, V): position t predicts report token t
        losses = F.cross_entropy(logits.transpose(1, 2), report_ids, reduction="none")  # (B, L)
        weights = report_mask.to(losses.dtype)
        return (losses * weights).sum(dim=1), weights.sum(dim=1)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, image_mask: torch.Tensor, **settings) -> torch.Tensor:
        """Report token ids from the images alone (Eq. 5): the prefix is prompt, Z_v, instruction."""
        embeds, mask = self.prefix({"pixel_values": pixel_values, "image_mask": image_mask}, ("image",))
        return self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask.long(),
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            do_sample=False,
            **settings,
        )


@dataclass
class Built:
    """A model with what feeds it: the image preprocessor and both tokenizers."""

    model: S2DAlign
    preprocess: ImagePreprocessor
    tokenizers: Tokenizers


def build_model(config, text_encoder: bool = True) -> Built:
    """Load the base models named by a ``ModelConfig`` and assemble S2D-Align around them.

    ``text_encoder=False`` builds the image-only model that generation needs
    (Eq. 5 reads Z_v alone): E_t is never constructed, and the connector gets
    its image adapter (and memory) only.
    """
    vision, preprocess = load_vision_encoder(
        config.vision.name_or_path, config.vision.trust_remote_code, config.vision.num_prefix_tokens
    )
    text, text_tokenizer = (
        load_text_encoder(config.text.name_or_path, config.text.trust_remote_code) if text_encoder else (None, None)
    )
    llm, tokenizer = load_llm(config.llm.name_or_path, config.llm.dtype, config.llm.trust_remote_code)
    llm.requires_grad_(False)
    if config.llm.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    llm = add_lora(llm, config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.target_modules)
    c = config.connector
    in_dims = {"image": vision.hidden_size}
    if text is not None:
        in_dims.update(reference=text.hidden_size, key_phrases=text.hidden_size)
    connector = build_connector(
        c.kind,
        in_dims,
        llm.get_input_embeddings().embedding_dim,
        num_memory=c.num_memory,
        memory_dim=c.memory_dim,
        hidden_size=c.hidden_size,
        num_heads=c.num_heads,
        dropout=c.dropout,
        qformer_layers=c.qformer_layers,
    )
    prompt = tokenizer(config.prompt.prompt, add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None:
        prompt = [tokenizer.bos_token_id] + prompt
    instruction = tokenizer(config.prompt.instruction, add_special_tokens=False).input_ids
    model = S2DAlign(
        vision,
        text,
        connector,
        llm,
        torch.tensor(prompt, dtype=torch.long),
        torch.tensor(instruction, dtype=torch.long),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Built(model, preprocess, Tokenizers(llm=tokenizer, text=text_tokenizer))
