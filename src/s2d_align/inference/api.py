"""The Python API: a trained model as a callable that turns radiographs into a report.

::

    from s2d_align import ReportGenerator
    gen = ReportGenerator.from_pretrained("MODEL", device="cpu")
    r = gen("cxr.png")               # one study: path, bytes, PIL image, array, or a list of views
    r.text, r.labels, r.heatmaps     # FINDINGS, its 14 CheXpert labels, grounding maps
    rs = gen.batch(["a.png", ["b_pa.dcm", "b_lat.dcm"]])

Generation is what ``s2d-align generate`` does (paper, Eq. 5: the image alone,
greedy or beam search, no sampling), over the same image reader and
preprocessor, so for the same image and settings the text is the same. The
labels are those of the rules CheXpert labeler applied to the generated text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from s2d_align.config import GenerateConfig, to_dict
from s2d_align.inference.images import read_image


@dataclass(frozen=True)
class SentenceMap:
    """Where the model looked for one sentence, on one view: ``map`` (h, w) over patches, summing to 1."""

    sentence: str
    map: np.ndarray
    view: int


@dataclass(frozen=True)
class Report:
    text: str
    labels: dict[str, int | None]
    heatmaps: list[SentenceMap] = field(default_factory=list)


def _is_single_image(study) -> bool:
    return not isinstance(study, (list, tuple))


class ReportGenerator:
    """A loaded model plus its generation settings; call it on a study, or :meth:`batch` on several."""

    def __init__(self, built, config, info: dict[str, Any], device: torch.device):
        self.built = built
        self.config = config
        self.device = device
        self.model = built.model.to(device).eval()
        self._info = info
        self._labeler = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", *, trust_remote_code: bool = False, **generate_overrides
    ) -> "ReportGenerator":
        """Load a model folder (``s2d-align export``) or a stage checkpoint folder; ``num_beams=1`` etc. override."""
        from s2d_align.models.pretrained import load_pretrained

        overrides = [f"generate.{k}={v}" for k, v in _checked(generate_overrides).items()]
        built, config, info = load_pretrained(path, overrides, trust_remote_code=trust_remote_code)
        return cls(built, config, info, torch.device(device))

    # ------------------------------------------------------------------ settings

    def settings(self, **overrides) -> GenerateConfig:
        return dataclasses.replace(self.config.generate, **_checked(overrides))

    @property
    def info(self) -> dict[str, Any]:
        """What is loaded and how it generates: for the ``model`` and ``settings`` fields of a result."""
        return {**self._info, "device": str(self.device), "max_images": self.config.data.max_images,
                "settings": to_dict(self.config.generate)}

    # ------------------------------------------------------------------ reports

    def __call__(self, study, heatmaps: bool = False, **overrides) -> Report:
        return self.batch([study], heatmaps=heatmaps, **overrides)[0]

    def batch(self, studies: Sequence, heatmaps: bool = False, **overrides) -> list[Report]:
        """Reports for several studies, ``batch_size`` at a time; each study is an image or a list of views."""
        settings = self.settings(**overrides)
        views = [self.read_views(study) for study in studies]
        reports: list[Report] = []
        for start in range(0, len(views), settings.batch_size):
            chunk = views[start : start + settings.batch_size]
            pixels, mask = self.pixels(chunk)
            ids = self.generate_ids(pixels, mask, settings)
            texts = [t.strip() for t in self.built.tokenizers.llm.batch_decode(ids, skip_special_tokens=True)]
            labels = self.labeler.label(texts)
            for i, (text, label) in enumerate(zip(texts, labels)):
                maps = []
                if heatmaps:
                    from s2d_align.inference.grounding import sentence_maps

                    maps = sentence_maps(self, pixels[i : i + 1], mask[i : i + 1], ids[i], text)
                reports.append(Report(text=text, labels=label, heatmaps=maps))
        return reports

    # ------------------------------------------------------------------ steps

    def read_views(self, study) -> list:
        """A study's images as grayscale PIL images, at most ``data.max_images`` of them (as training)."""
        sources = [study] if _is_single_image(study) else list(study)
        if not sources:
            raise ValueError("a study needs at least one image")
        return [read_image(s) for s in sources[: self.config.data.max_images]]

    def pixels(self, studies: Sequence[list]) -> tuple[torch.Tensor, torch.Tensor]:
        """Grayscale views -> (B, I, 3, H, W) pixels, zero-padded to ``max_images``, and the (B, I) view mask."""
        max_images = self.config.data.max_images
        rows, masks = [], []
        for images in studies:
            values = self.built.preprocess(images)  # (n, 3, H, W)
            padded = torch.zeros((max_images, *values.shape[1:]), dtype=values.dtype)
            padded[: len(values)] = values
            mask = torch.zeros(max_images, dtype=torch.bool)
            mask[: len(values)] = True
            rows.append(padded)
            masks.append(mask)
        return torch.stack(rows), torch.stack(masks)

    def generate_ids(self, pixels: torch.Tensor, mask: torch.Tensor, settings: GenerateConfig) -> torch.Tensor:
        from s2d_align.inference.generation import generation_settings

        with torch.no_grad():
            return self.model.generate(pixels.to(self.device), mask.to(self.device), **generation_settings(settings))

    @property
    def labeler(self):
        if self._labeler is None:
            from s2d_align.evaluation.labelers.rules import RuleLabeler

            self._labeler = RuleLabeler()
        return self._labeler


def _checked(overrides: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(GenerateConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown generation setting(s) {unknown}; known: {sorted(known)}")
    return overrides
