"""Torch datasets over a manifest, and the collator that tokenises a batch.

:class:`TrainingDataset` serves a study's images and report with the auxiliary
texts its stage needs: the reference report (the findings of the study named
by ``reference_id``) and a fresh random subset of its key phrases each epoch.
:class:`ImageOnlyDataset` is what generation reads: it is built from the ids,
image paths and findings alone, so no auxiliary field can reach a prediction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from s2d_align.data.images import load_image
from s2d_align.data.manifest import Study, image_path

KEY_PHRASE_SEPARATOR = "; "


def load_views(paths: Sequence[Path], preprocess, max_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``max_images`` images -> pixels (I, 3, H, W) zero-padded to ``max_images``, and a mask (I,)."""
    pixels = preprocess([load_image(p) for p in paths[:max_images]])  # (n, 3, H, W)
    padded = torch.zeros((max_images, *pixels.shape[1:]), dtype=pixels.dtype)
    padded[: len(pixels)] = pixels
    mask = torch.zeros(max_images, dtype=torch.bool)
    mask[: len(pixels)] = True
    return padded, mask


class TrainingDataset(Dataset):
    def __init__(
        self,
        studies: Sequence[Study],
        findings_by_id: dict[str, str],
        manifest: Path,
        preprocess,
        max_images: int,
        max_key_phrases: int,
        seed: int = 0,
    ):
        self.studies = list(studies)
        self.findings_by_id = findings_by_id
        self.manifest = manifest
        self.preprocess = preprocess
        self.max_images = max_images
        self.max_key_phrases = max_key_phrases
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Key-phrase subsets are redrawn every epoch, reproducibly."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict:
        study = self.studies[index]
        pixels, mask = load_views([image_path(self.manifest, p) for p in study.images], self.preprocess, self.max_images)
        reference = self.findings_by_id[study.reference_id] if study.reference_id else ""
        rng = random.Random(f"{self.seed}:{self.epoch}:{study.id}")
        phrases = [k.text for k in study.key_phrases]
        if phrases:
            count = rng.randint(1, min(len(phrases), self.max_key_phrases))
            phrases = [phrases[i] for i in sorted(rng.sample(range(len(phrases)), count))]
        return {
            "id": study.id,
            "pixel_values": pixels,
            "image_mask": mask,
            "report": study.findings,
            "reference": reference,
            "key_phrases": KEY_PHRASE_SEPARATOR.join(phrases),
        }


@dataclass(frozen=True)
class ImageOnlyItem:
    id: str
    images: tuple[Path, ...]
    findings: str  # the ground truth, carried through for scoring; never shown to the model


class ImageOnlyDataset(Dataset):
    def __init__(self, items: Sequence[ImageOnlyItem], preprocess, max_images: int):
        self.items = list(items)
        self.preprocess = preprocess
        self.max_images = max_images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        pixels, mask = load_views(item.images, self.preprocess, self.max_images)
        return {"id": item.id, "pixel_values": pixels, "image_mask": mask, "findings": item.findings}


def image_only_items(studies: Sequence[Study], manifest: Path) -> list[ImageOnlyItem]:
    """The only view of a study that generation gets."""
    return [ImageOnlyItem(s.id, tuple(image_path(manifest, p) for p in s.images), s.findings) for s in studies]


class Collator:
    """Stacks images and tokenises texts: reports with the LLM tokenizer (+EOS), auxiliary texts with E_t's."""

    def __init__(self, llm_tokenizer, text_tokenizer, max_report_tokens: int, max_text_tokens: int):
        self.llm_tokenizer = llm_tokenizer
        self.text_tokenizer = text_tokenizer
        self.max_report_tokens = max_report_tokens
        self.max_text_tokens = max_text_tokens

    def __call__(self, samples: list[dict]) -> dict:
        batch = {
            "ids": [s["id"] for s in samples],
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),  # (B, I, 3, H, W)
            "image_mask": torch.stack([s["image_mask"] for s in samples]),  # (B, I)
        }
        if "report" in samples[0]:
            batch["report_ids"], batch["report_mask"] = self.reports([s["report"] for s in samples])
            for field, prefix in (("reference", "reference"), ("key_phrases", "key_phrase")):
                encoded = self.text_tokenizer(
                    [s[field] for s in samples],
                    padding=True,
                    truncation=True,
                    max_length=self.max_text_tokens,
                    return_tensors="pt",
                )
                batch[f"{prefix}_ids"], batch[f"{prefix}_mask"] = encoded["input_ids"], encoded["attention_mask"]
        else:
            batch["findings"] = [s["findings"] for s in samples]
        return batch

    def reports(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Report token ids with EOS appended (the model must learn to stop), right-padded.

        Over-long reports are cut at a sentence boundary (:mod:`s2d_align.data.report_cut`).
        """
        from s2d_align.data.report_cut import fit_report

        eos = self.llm_tokenizer.eos_token_id
        rows = [fit_report(t, self.llm_tokenizer, self.max_report_tokens)[0] + [eos] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.llm_tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask
