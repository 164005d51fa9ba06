"""The model card (``README.md``) of an exported model folder.

A model that leaves the machine it was trained on needs to say what it is:
what it was trained on and how (the curriculum of the paper, Sec. 3), how
well it did on its test split and under which scoring conventions, and what
it must not be used for. The figures come from the run's ``metrics.json``
when the run has one; nothing is filled in by hand.
"""

from __future__ import annotations

import json
from typing import Any

from s2d_align.config import Config


def _stages(config: Config) -> list[str]:
    rows = []
    for stage in config.train.stages:
        contexts = ", ".join(stage.contexts)
        lora = "LoRA on" if stage.lora else "LLM frozen"
        rows.append(f"| {stage.name} | {contexts} | {lora} | {stage.epochs} | {stage.lr:g} |")
    return rows


def _metrics(metrics: dict[str, Any] | None, config: Config) -> list[str]:
    if not metrics:
        return ["No `metrics.json` was found in the run folder, so this card reports no test figures."]
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines = [
        "Scored on the run's test split, generating from the image alone (paper, Eq. 5), "
        f"with the settings below; reports cleaned with `{config.evaluate.clean}` and labelled "
        f"with the `{config.evaluate.labeler}` CheXpert labeler before scoring "
        "(see `docs/evaluation.md` of s2d-align for the conventions).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |" for name, value in flat.items()]
    nested = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if nested:
        lines += ["", "Further entries of `metrics.json`:", "", "```json", json.dumps(nested, indent=2)[:4000], "```"]
    return lines


def model_card(config: Config, meta: dict[str, Any], info: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    m = config.model
    g = config.generate
    lines = [
        f"# {info['name']}",
        "",
        "An S2D-Align radiology report generator: a chest radiograph in, the FINDINGS section of a "
        "report out. **Research use only. Not a medical device; not for clinical use or diagnosis.**",
        "",
        "## Model",
        "",
        f"- vision encoder (frozen): `{m.vision.name_or_path}`",
        f"- LLM: `{m.llm.name_or_path}` ({m.llm.dtype}), LoRA r={m.lora.r}, alpha={m.lora.alpha}",
        f"- connector: `{m.connector.kind}` with {m.connector.num_memory} memory queries of width "
        f"{m.connector.memory_dim}",
        f"- exported from stage `{info.get('stage')}` (`{info['source_checkpoint']}`)",
        "",
        "Generation reads the image alone; the text encoder used in training is not needed.",
        "",
        "## Training data and recipe",
        "",
        f"- manifest: `{config.data.manifest}`; up to {config.data.max_images} image(s) per study",
        "- curriculum (paper, Sec. 3): image only, then with the reference report, then with key phrases",
        "",
        "| stage | context | LLM | epochs | lr |",
        "|---|---|---|---|---|",
        *_stages(config),
        "",
        f"Last stage: epoch {meta.get('epoch')}, step {meta.get('step')}.",
        "",
        "## Test metrics",
        "",
        *_metrics(metrics, config),
        "",
        "## Generation settings",
        "",
        f"num_beams={g.num_beams}, max_new_tokens={g.max_new_tokens}, min_new_tokens={g.min_new_tokens}, "
        f"length_penalty={g.length_penalty}, repetition_penalty={g.repetition_penalty}, "
        f"no_repeat_ngram_size={g.no_repeat_ngram_size}",
        "",
        "## Intended use and limits",
        "",
        "- Intended for research on report generation: reproducing and comparing methods, studying what "
        "the model attends to.",
        "- Not for clinical use. Its reports can state findings that are absent and miss findings that are "
        "present; they have not been validated by radiologists.",
        "- It knows only the data it was trained on: other hospitals, devices, views, populations or "
        "languages may fail silently. A model trained on the synthetic phantom knows nothing about real "
        "radiographs.",
        "- The grounding maps show where the adapter's memory looked, not a validated localisation.",
        "",
        "## Use",
        "",
        "```python",
        "from s2d_align import ReportGenerator",
        f'gen = ReportGenerator.from_pretrained("{info["name"]}")',
        'print(gen("cxr.png").text)',
        "```",
        "",
        f"or `s2d-align report --model {info['name']} cxr.png`.",
        "",
    ]
    return "\n".join(lines)
