"""``s2d-align experiment``: the paper's Tables 3 and 4 on the phantom, with seeds and matched compute.

The paper's ablations (Table 3: the curriculum; Table 4: the connector) rest
on single GPU runs. The phantom knows the truth behind every report, so each
claim can be tested on CPU, over several training seeds, with intervals that
cover both test reports and seeds (:mod:`experiments.statistics`).

A *cell* is one recipe of ``configs/ablations/`` (named after it), or
``s1_s2_s3``, the full method (``configs/mimic_cxr/s2d_align.yaml``). The grid
takes from each recipe what the ablation changes (its stages' names, contexts
and LoRA switch, its connector kind) and runs it at the demo's tiny size
(``configs/demo.yaml``): stage lengths are the recipe's epochs times
``epoch_scale``, learning rates and warm-up the demo's stage of the same name,
and early stopping is off, so that every cell's number of optimizer steps is
fixed in advance. That makes matched compute exact: a ``*_matched`` recipe
trains its one stage for as many epochs as the full method's stages together,
on the same training set, hence exactly as many optimizer steps.

All cells share one phantom and one set of base models (``DIR/phantom``,
``DIR/base_models``). Each cell and seed trains into
``DIR/cells/NAME/seed_S`` (train's own resume picks up an interrupted one),
generates the test reports from the images alone with its last stage, and is
scored; ``metrics.json`` there marks it finished, so a rerun skips it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from s2d_align import atomic
from s2d_align.config import Config, apply_overrides, from_dict, read_recipe, resolve_recipe

FULL = "s1_s2_s3"
TABLE3 = ("s1_only", "s1_s2", "s1_s3", "s1_s3_s2", "joint", "s1_only_matched", "joint_matched", FULL)
TABLE4 = ("mlp", "mlp_qformer", "mlp_msa", "sma_unshared", FULL)
GRIDS = {"table3": TABLE3, "table4": TABLE4, "all": tuple(dict.fromkeys(TABLE3 + TABLE4))}
METRICS = {"ce_f1": "CE-F1", "bleu4": "B@4", "rouge_l": "R-L"}
CONTROLS = {
    FULL: "the full method: S1 (image) -> S2 (+reference) -> S3 (+key phrases); every row is compared with it",
    "s1_only": "single stage, the paper's row: what S2 and S3 add, mixed with their extra optimizer steps",
    "s1_only_matched": "single stage for the full method's steps: the later stages' contexts, at equal compute",
    "s1_s2": "no fine-grained grounding (no S3): what the key-phrase stage adds",
    "s1_s3": "no reference stage (no S2): what the prior study adds",
    "s1_s3_s2": "the stages in reversed order: whether the order matters",
    "joint": "all contexts mixed in one stage, the paper's length: curriculum vs mixing",
    "joint_matched": "all contexts mixed in one stage for the full method's steps: order vs mixing at equal compute",
    "mlp": "an MLP per modality, no memory: what SMA's shared memory adds",
    "mlp_qformer": "an MLP and a Q-Former per modality: SMA vs a learned-query connector",
    "mlp_msa": "an MLP and multi-head self-attention: SMA vs plain attention over the tokens",
    "sma_unshared": "SMA with a memory per modality: whether sharing the memory matters",
}


@dataclass(frozen=True)
class GridSettings:
    grid: str = "all"
    seeds: int = 3
    studies: int = 1000
    epoch_scale: float = 0.4
    overrides: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()  # a subset of the grid's cells (empty: all of them)


def recipe_path(name: str) -> Path:
    return resolve_recipe("mimic_cxr/s2d_align" if name == FULL else f"ablations/{name}")


def cell_stages(name: str, demo: dict, epoch_scale: float) -> list[dict]:
    """The cell's stages at the demo's size; see the module docstring for what is kept from the recipe."""
    by_name = {s["name"]: s for s in demo["train"]["stages"]}
    fallback = by_name.get("s2", demo["train"]["stages"][-1])
    if name.endswith("_matched"):
        epochs = sum(s["epochs"] for s in cell_stages(FULL, demo, epoch_scale))
        stages = read_recipe(recipe_path(name))["train"]["stages"]
        if len(stages) != 1:
            raise ValueError(f"{recipe_path(name)}: a matched-compute recipe has one stage, not {len(stages)}")
        lengths = [epochs]
    else:
        stages = read_recipe(recipe_path(name))["train"]["stages"]
        lengths = [max(1, round(s.get("epochs", 1) * epoch_scale)) for s in stages]
    out = []
    for stage, epochs in zip(stages, lengths):
        like = by_name.get(stage["name"], fallback)
        out.append({
            "name": stage["name"],
            "contexts": stage.get("contexts", ["image"]),
            "lora": stage.get("lora", False),
            "epochs": epochs,
            "lr": like["lr"],
            "warmup_steps": like.get("warmup_steps", 0),
            "patience": epochs + 1,  # never stops early: the step count is fixed in advance
        })
    return out


def cell_config(name: str, seed: int, out: Path, settings: GridSettings) -> Config:
    raw = read_recipe(resolve_recipe("demo"))
    recipe = read_recipe(recipe_path(name))
    raw["train"]["stages"] = cell_stages(name, raw, settings.epoch_scale)
    raw["model"]["connector"]["kind"] = recipe.get("model", {}).get("connector", {}).get("kind", "sma")
    base = out / "base_models"
    raw = apply_overrides(raw, [
        f"model.vision.name_or_path={base / 'vision'}",
        f"model.text.name_or_path={base / 'text'}",
        f"model.llm.name_or_path={base / 'llm'}",
        f"data.manifest={out / 'phantom' / 'manifest.jsonl'}",
        f"demo.studies={settings.studies}",
        f"train.seed={seed}",
        *settings.overrides,
    ])
    return from_dict(Config, raw, f"experiment cell {name}")


def run_grid(out: Path, settings: GridSettings) -> dict:
    """Run (or finish) every cell and seed, then write ``results.json``, ``results.md`` and ``plots/``."""
    from s2d_align.experiments.results import write_results

    if settings.grid not in GRIDS:
        raise ValueError(f"--grid must be one of {', '.join(GRIDS)}, got {settings.grid!r}")
    if settings.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {settings.seeds}")
    out = Path(out).resolve()
    started = time.perf_counter()
    _shared_world(out, settings)
    cells = GRIDS[settings.grid]
    unknown = [c for c in settings.cells if c not in cells]
    if unknown:
        raise ValueError(f"--cells {unknown} are not in grid {settings.grid}: {', '.join(cells)}")
    cells = tuple(c for c in cells if c in settings.cells) if settings.cells else cells
    seconds: dict[str, float] = {}
    for index, name in enumerate(cells):
        for seed in range(settings.seeds):
            print(f"[cell {index + 1}/{len(cells)}] {name}, seed {seed}")
            seconds[f"{name}/seed_{seed}"] = run_cell(name, seed, out, settings)
    results = write_results(out, cells, settings, seconds, time.perf_counter() - started)
    return results


def _shared_world(out: Path, settings: GridSettings) -> None:
    """One phantom and one set of base models for every cell (drawn from the demo recipe's seed)."""
    from s2d_align.data.phantom import prepare_phantom
    from s2d_align.models.tiny import TinySizes, build_tiny_models

    raw = read_recipe(resolve_recipe("demo"))
    demo = from_dict(Config, apply_overrides(raw, [f"demo.studies={settings.studies}", *settings.overrides]), "demo")
    phantom = out / "phantom"
    wanted = {"studies": settings.studies, "seed": demo.demo.seed, "image_size": demo.demo.image_size}
    report = phantom / "prepare_report.json"
    if report.is_file():
        drawn = json.loads(report.read_text(encoding="utf-8")).get("parameters")
        if drawn != wanted:
            raise ValueError(f"{out} holds a grid on another phantom ({drawn}, not {wanted}); use another --out")
    else:
        print(f"drawing the shared phantom ({settings.studies} studies) into {phantom}")
        prepare_phantom(phantom, studies=settings.studies, seed=demo.demo.seed, image_size=demo.demo.image_size)
    base = out / "base_models"
    if not (base / "llm" / "config.json").is_file():
        print(f"building the shared tiny base models into {base}")
        sizes = TinySizes(llm_pretrain_steps=demo.demo.llm_pretrain_steps)
        prompt = demo.model.prompt
        build_tiny_models(base, phantom / "manifest.jsonl", demo.demo.seed, sizes, prompt.prompt, prompt.instruction)


def run_cell(name: str, seed: int, out: Path, settings: GridSettings) -> float:
    """Train, generate image-only, score; skipped when ``metrics.json`` says the cell is done. Returns seconds."""
    from s2d_align.evaluation.report import score_records
    from s2d_align.inference.generation import generate_file
    from s2d_align.training.curves import total_steps
    from s2d_align.training.loop import train

    directory = out / "cells" / name / f"seed_{seed}"
    done = directory / "metrics.json"
    if done.is_file():
        print(f"  finished earlier: {done}")
        return json.loads(done.read_text(encoding="utf-8"))["seconds"]
    started = time.perf_counter()
    config = cell_config(name, seed, out, settings)
    stages = train(config, directory)
    last = config.train.stages[-1].name
    predictions = directory / "predictions.jsonl"
    partial = directory / "predictions.partial.jsonl"
    generate_file(directory / "checkpoints" / last, Path(config.data.manifest), "test", partial)
    partial.replace(predictions)
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    evaluation = score_records(records, clean=config.evaluate.clean, metrics="bleu,rouge_l,ce", resamples=0)
    metrics = {key: evaluation.metrics[key] for key in METRICS}
    per_observation = evaluation.metrics["ce"]["per_observation"]["uncertain_positive"]
    record = {
        "metrics": metrics,
        "per_observation_f1": {k: v["f1"] for k, v in per_observation.items()},
        "steps": total_steps(stages),
        "stages": [{"name": s.name, "steps": s.history[-1]["step"] if s.history else 0,
                    "best_val_loss": s.best_val_loss} for s in stages],
        "seconds": time.perf_counter() - started,
    }
    atomic.write_json(done, record)
    return record["seconds"]
