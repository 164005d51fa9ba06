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

from s2d_align import atomic
from s2d_align.config import GenerateConfig
from s2d_align.data.dataset import Collator, ImageOnlyDataset, image_only_items
from s2d_align.data.manifest import check_image_paths, read_manifest


def generation_settings(settings: GenerateConfig, max_report_tokens: int | None = None) -> dict:
    """``generate()`` keyword arguments; an unset ``max_new_tokens`` follows the training cap.

    Training admits ``data.max_report_tokens`` report tokens, EOS included, so
    a generation cap below it would cut reports the model learnt to finish.
    """
    max_new = settings.max_new_tokens if settings.max_new_tokens is not None else max_report_tokens
    if max_new is None:
        raise ValueError("generate.max_new_tokens is unset and no data.max_report_tokens was given")
    return {
        "num_beams": settings.num_beams,
        "max_new_tokens": max_new,
        "min_new_tokens": settings.min_new_tokens,
        "length_penalty": settings.length_penalty,
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": settings.no_repeat_ngram_size,
    }


def generate_reports(
    built, dataset: ImageOnlyDataset, settings: GenerateConfig, device: torch.device, max_report_tokens: int | None = None
) -> Iterator[dict]:
    """Yield ``{"id", "reference", "prediction"}`` per study, batched beam search."""
    collate = Collator(built.tokenizers.llm, None, max_report_tokens=1, max_text_tokens=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, collate_fn=collate)
    model = built.model.to(device).eval()
    tokenizer = built.tokenizers.llm
    kwargs = generation_settings(settings, max_report_tokens)
    for batch in tqdm(loader, desc="generating", unit="batch", leave=False):
        ids = model.generate(batch["pixel_values"].to(device), batch["image_mask"].to(device), **kwargs)
        for study_id, truth, text in zip(batch["ids"], batch["findings"], tokenizer.batch_decode(ids, skip_special_tokens=True)):
            yield {"id": study_id, "reference": truth, "prediction": text.strip()}


def generate_file(
    checkpoint: Path,
    manifest: Path,
    split: str,
    output: Path,
    overrides: Sequence[str] = (),
    images: Path | None = None,
    allow_absolute_paths: bool = False,
    trust_remote_code: bool = False,
) -> int:
    """Load a stage checkpoint or model folder, generate for ``split`` of ``manifest``, write predictions JSONL.

    ``overrides`` change the checkpoint's generation settings (``num_beams=1`` or
    ``generate.num_beams=1``). Only the image encoder and the LLM are loaded:
    generation reads images alone. The predictions are written to a temporary
    file and renamed at the end, so a failure leaves an earlier ``output``
    whole; ``output.meta.json`` beside them records the checkpoint and its
    recipe's scoring settings, which ``evaluate`` then uses by default.
    """
    from s2d_align.models.pretrained import load_pretrained

    atomic.refuse_overwrite(output, {"--manifest": manifest})
    meta = check_checkpoint(Path(checkpoint))
    studies = [s for s in read_manifest(manifest) if s.split == split]
    if not studies:
        raise ValueError(f"{manifest}: no studies in split {split!r}")
    # The image roots come from the command line only, never from the checkpoint's own config.
    check_image_paths(studies, manifest, [images], allow_absolute_paths)
    items = image_only_items(studies, manifest)
    _check_images_exist(items, manifest)
    built, config, _ = load_pretrained(checkpoint, generation_overrides(overrides), trust_remote_code=trust_remote_code)
    dataset = ImageOnlyDataset(items, built.preprocess, config.data.max_images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = 0
    with atomic.atomic_open(output) as handle:
        for record in generate_reports(built, dataset, config.generate, device, config.data.max_report_tokens):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    atomic.write_json(sidecar_path(output), {
        "checkpoint": str(Path(checkpoint).resolve()), "stage": meta.get("stage"), "manifest": str(manifest),
        "split": split, "generate": generation_settings(config.generate, config.data.max_report_tokens) | {"batch_size": config.generate.batch_size},
        "evaluate": {"clean": config.evaluate.clean, "labeler": config.evaluate.labeler},
    })
    return count


META_FILE = "meta.json"  # written last by training into each stage folder; ``complete: true`` once finished


def sidecar_path(predictions: Path) -> Path:
    """``P.jsonl`` -> ``P.jsonl.meta.json``: where generation records what produced the predictions."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name + ".meta.json")


def generation_overrides(overrides: Sequence[str]) -> list[str]:
    """``num_beams=2`` and ``generate.num_beams=2`` both mean ``generate.num_beams=2``."""
    return [o if o.strip().startswith("generate.") else f"generate.{o}" for o in overrides]


def check_checkpoint(directory: Path) -> dict:
    """The stage's metadata, or an error that says what the folder is and what to pass instead."""
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no such checkpoint folder")
    if not directory.is_dir():
        raise ValueError(f"{directory}: a checkpoint is a stage folder such as RUN/checkpoints/s3, not a file")
    stages = sorted(p.name for p in (directory / "checkpoints").glob("*") if (p / META_FILE).is_file())
    if stages:
        raise ValueError(f"{directory} is a run folder, not a stage checkpoint; pass one of its stages: "
                         + ", ".join(str(directory / "checkpoints" / s) for s in stages))
    if not any(directory.iterdir()):
        raise ValueError(f"{directory}: the folder is empty; pass a stage folder written by train (RUN/checkpoints/s3)")
    from s2d_align.models.pretrained import MODEL_FILE, is_model_folder

    if is_model_folder(directory):  # written by `s2d-align export` from a finished stage
        return json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8")) if (directory / META_FILE).is_file() else None
    if meta is None:
        raise ValueError(f"{directory}: not a finished checkpoint (no {META_FILE}); train first, or resume the run")
    if not meta.get("complete"):
        raise ValueError(f"{directory}: stage {meta.get('stage', directory.name)!r} did not finish (complete: false in "
                         f"{META_FILE}); resume it with the same `s2d-align train --config ... --out RUN` command first")
    return meta


def _check_images_exist(items, manifest: Path) -> None:
    missing = [(item.id, path) for item in items for path in item.images if not path.is_file()]
    if missing:
        listing = "\n".join(f"  record {rid}: {path}" for rid, path in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise FileNotFoundError(f"{len(missing)} image(s) named by {manifest} do not exist:\n{listing}{more}")
