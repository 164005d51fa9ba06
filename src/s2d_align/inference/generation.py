"""Report generation from the image alone (paper: Eq. 5).

Generation reads the manifest through :func:`data.dataset.image_only_items`,
which keeps a study's id, image paths and findings (the ground truth, carried
only to the output for scoring) and drops everything else. The model's
``generate`` takes pixels only. Reference reports, key phrases, labels and
RadGraph annotations therefore cannot influence a prediction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from s2d_align.config import GenerateConfig
from s2d_align.data.dataset import Collator, ImageOnlyDataset, image_only_items
from s2d_align.data.manifest import read_manifest


def generation_settings(settings: GenerateConfig) -> dict:
    return {
        "num_beams": settings.num_beams,
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens,
        "length_penalty": settings.length_penalty,
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": settings.no_repeat_ngram_size,
    }


def generate_reports(built, dataset: ImageOnlyDataset, settings: GenerateConfig, device: torch.device) -> Iterator[dict]:
    """Yield ``{"id", "reference", "prediction"}`` per study, batched beam search."""
    collate = Collator(built.tokenizers.llm, None, max_report_tokens=1, max_text_tokens=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, collate_fn=collate)
    model = built.model.to(device).eval()
    tokenizer = built.tokenizers.llm
    kwargs = generation_settings(settings)
    for batch in tqdm(loader, desc="generating", unit="batch", leave=False):
        ids = model.generate(batch["pixel_values"].to(device), batch["image_mask"].to(device), **kwargs)
        for study_id, truth, text in zip(batch["ids"], batch["findings"], tokenizer.batch_decode(ids, skip_special_tokens=True)):
            yield {"id": study_id, "reference": truth, "prediction": text.strip()}


def generate_file(checkpoint: Path, manifest: Path, split: str, output: Path, overrides: Sequence[str] = ()) -> int:
    """Load a stage checkpoint or model folder, generate for ``split`` of ``manifest``, write predictions JSONL.

    ``overrides`` change the checkpoint's generation settings (``num_beams=1``).
    """
    from s2d_align.models.pretrained import load_pretrained

    built, config, _ = load_pretrained(checkpoint, [f"generate.{o}" for o in overrides])
    studies = [s for s in read_manifest(manifest) if s.split == split]
    if not studies:
        raise ValueError(f"{manifest}: no studies in split {split!r}")
    dataset = ImageOnlyDataset(image_only_items(studies, manifest), built.preprocess, config.data.max_images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with output.open("w", encoding="utf-8") as handle:
        for record in generate_reports(built, dataset, config.generate, device):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
