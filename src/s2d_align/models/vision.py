"""The frozen medical ViT E_v (paper: Visual Encoder): radiographs in, patch tokens out.

Any ``transformers.AutoModel`` vision transformer whose output has
``last_hidden_state`` works; the default is Rad-DINO (DINOv2 ViT-B/14, 518 px,
hidden 768). The encoder stays frozen and in eval mode for the whole
curriculum, so its forward runs without autograd.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torch import nn


class VisionEncoder(nn.Module):
    def __init__(self, model: nn.Module, num_prefix_tokens: int):
        super().__init__()
        self.model = model
        self.num_prefix_tokens = num_prefix_tokens
        self.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "VisionEncoder":
        return super().train(False)  # frozen: dropout and friends stay off

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch tokens (B, N, d_v), without CLS/register tokens."""
        hidden = self.model(pixel_values=pixel_values).last_hidden_state  # (B, prefix + N, d_v)
        return hidden[:, self.num_prefix_tokens :]

    @torch.no_grad()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """One vector per image (mean of patch tokens, L2-normalised): for retrieval, not for the LLM."""
        return nn.functional.normalize(self.forward(pixel_values).float().mean(dim=1), dim=-1)


class ImagePreprocessor:
    """Grayscale PIL radiographs -> normalised (n, 3, H, W) pixel tensors via the model's own image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.processor(images=[self.prepare(image) for image in images], return_tensors="pt")["pixel_values"]

    def prepare(self, image: Image.Image) -> Image.Image:
        """Resize a grayscale image first, then make it RGB: the same pixels, a third of the resizing work.

        The image processor resizes after its own RGB conversion, so a
        2544x3056 radiograph would be resized in three identical channels.
        Resizing the single channel with the processor's own filter and
        target size gives exactly the same RGB image (each channel of the
        converted image *is* the grayscale one), and the processor's resize
        then finds nothing to do.
        """
        if image.mode != "L":  # 16-bit, float and colour images: the processor resizes them itself
            return image.convert("RGB")
        size = self._target_size(image.size)
        if size is not None and size != image.size:
            image = image.resize(size, resample=self._resample())
        return image.convert("RGB")

    def _resample(self):
        resample = getattr(self.processor, "resample", Image.Resampling.BICUBIC)
        return Image.Resampling(int(resample)) if resample is not None else Image.Resampling.BICUBIC

    def _target_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """(width, height) the processor would resize to, for its ``shortest_edge`` or fixed sizes; else None."""
        if not getattr(self.processor, "do_resize", False):
            return None
        target = getattr(self.processor, "size", None) or {}
        target = dict(target) if not isinstance(target, dict) else target
        if target.get("shortest_edge") and not target.get("longest_edge"):
            from s2d_align.data.resized import shortest_edge_size

            return shortest_edge_size(size, target["shortest_edge"])
        if target.get("height") and target.get("width"):
            return int(target["width"]), int(target["height"])
        return None


def infer_prefix_tokens(config) -> int:
    """CLS plus any register tokens (DINOv2 with registers) precede the patch tokens."""
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def load_vision_encoder(
    name_or_path: str,
    trust_remote_code: bool = False,
    num_prefix_tokens: int | None = None,
    key: str = "model.vision.name_or_path",
) -> tuple[VisionEncoder, ImagePreprocessor]:
    """Load E_v and its image processor from a hub id or a local folder (``key`` names the setting in errors)."""
    from transformers import AutoImageProcessor, AutoModel

    from s2d_align.models.loading import explain_load_errors

    with explain_load_errors(key, name_or_path):
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    prefix = infer_prefix_tokens(model.config) if num_prefix_tokens is None else num_prefix_tokens
    return VisionEncoder(model, prefix), ImagePreprocessor(processor)
