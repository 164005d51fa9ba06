"""Labelers that turn a report into the 14 CheXpert observations (1 / 0 / -1 / blank).

Every labeler has ``name``, ``version`` and ``label(texts) -> list[dict]``
(observation -> 1 | 0 | -1 | None, all 14 in :data:`s2d_align.chexpert.OBSERVATIONS`
order). ``rules`` runs anywhere; ``chexbert`` needs the published weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

LABELERS = ("rules", "chexbert")


class Labeler(Protocol):
    name: str
    version: str

    def label(self, texts: list[str]) -> list[dict[str, int | None]]: ...


def build_labeler(name: str, checkpoint: str | Path | None = None, bert_dir: str | Path | None = None,
                  device: str = "cpu", batch_size: int = 32) -> Labeler:
    """The labeler called ``name``; ``chexbert`` needs ``checkpoint`` and ``bert_dir``."""
    if name == "rules":
        from s2d_align.evaluation.labelers.rules import RuleLabeler

        return RuleLabeler()
    if name == "chexbert":
        if checkpoint is None or bert_dir is None:
            raise ValueError(
                "the chexbert labeler needs --chexbert-checkpoint (the published chexbert.pth) and "
                "--bert-dir (a local bert-base-uncased folder with config.json and vocab.txt)"
            )
        from s2d_align.evaluation.labelers.chexbert import CheXbertLabeler

        return CheXbertLabeler(Path(checkpoint), Path(bert_dir), device=device, batch_size=batch_size)
    raise ValueError(f"unknown labeler {name!r}; choose one of {', '.join(LABELERS)}")


def resolve_labeler(labeler: str | Labeler, options: dict | None = None) -> Labeler:
    """A labeler object: ``labeler`` itself, or the one :func:`build_labeler` makes from its name."""
    if isinstance(labeler, str):
        return build_labeler(labeler, **(options or {}))
    return labeler


def label_file(input_path: str | Path, output_path: str | Path, labeler: Labeler) -> int:
    """Label ``{"id", "text"}`` JSONL lines into ``{"id", "labels": {observation: 1|0|-1|null}}`` lines."""
    from s2d_align.evaluation.predictions import TEXT_KEYS, read_jsonl, write_jsonl

    from s2d_align import atomic

    atomic.refuse_overwrite(output_path, {"--input": input_path})
    records = read_jsonl(Path(input_path), TEXT_KEYS)
    labels = labeler.label([r["text"] for r in records])
    write_jsonl(Path(output_path), [{"id": r["id"], "labels": l} for r, l in zip(records, labels)])
    return len(records)
