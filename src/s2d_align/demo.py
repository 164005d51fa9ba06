"""``s2d-align demo``: the whole method on the phantom dataset, start to finish.

Draws the phantom dataset into the run folder, builds tiny random base models
there, trains the real architecture through the recipe's curriculum, generates
test reports from the images alone after the first and the last stage, scores
both and prints them side by side, so the user sees what the curriculum adds.
Each step reuses what an interrupted earlier demo in the same folder finished.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from s2d_align import atomic
from s2d_align.config import load_config


def run_demo(out: Path, studies: int | None = None, config: str = "demo", overrides: Sequence[str] = ()) -> dict:
    from s2d_align.data.phantom import prepare_phantom
    from s2d_align.evaluation.report import evaluate_records, format_table
    from s2d_align.inference.generation import generate_file
    from s2d_align.models.tiny import TinySizes, build_tiny_models
    from s2d_align.training.loop import train

    from s2d_align.reproducibility import apply_threads

    started = time.perf_counter()
    cpu = apply_threads()
    out = Path(out).resolve()
    recipe = load_config(config, overrides)
    phantom = recipe.demo
    count = studies or phantom.studies
    timings: dict[str, float] = {}

    manifest = out / "manifest.jsonl"
    wanted = {"studies": count, "seed": phantom.seed, "image_size": phantom.image_size}
    with _timed(timings, "prepare"):
        previous = _phantom_parameters(out)
        if previous != wanted:
            if previous is not None:
                _clear_derived(out, previous, wanted)
            print(f"[1/5] drawing the phantom dataset ({count} studies) into {out}")
            prepare_phantom(out, studies=count, seed=phantom.seed, image_size=phantom.image_size)
        else:
            print(f"[1/5] phantom dataset already in {out}")

    base = out / "base_models"
    with _timed(timings, "base_models"):
        if not (base / "llm" / "config.json").is_file():
            print(f"[2/5] building tiny base models into {base}")
            prompt = recipe.model.prompt
            sizes = TinySizes(llm_pretrain_steps=phantom.llm_pretrain_steps)
            build_tiny_models(base, manifest, phantom.seed, sizes, prompt=prompt.prompt, instruction=prompt.instruction)
        else:
            print(f"[2/5] tiny base models already in {base}")

    config = load_config(
        config,
        [
            *overrides,
            f"model.vision.name_or_path={base / 'vision'}",
            f"model.text.name_or_path={base / 'text'}",
            f"model.llm.name_or_path={base / 'llm'}",
            f"data.manifest={manifest}",
            f"demo.studies={count}",
        ],
    )
    print(f"[3/5] training the curriculum: {' -> '.join(s.name for s in config.train.stages)}")
    with _timed(timings, "train"):
        stages = train(config, out)

    first, last = config.train.stages[0].name, config.train.stages[-1].name
    results: dict[str, dict] = {}
    for name in dict.fromkeys([first, last]):
        output = out / ("predictions.jsonl" if name == last else f"predictions_{name}.jsonl")
        print(f"[4/5] generating test reports from the images alone with the {name} checkpoint")
        with _timed(timings, f"generate_{name}"):
            generated = generate_file(out / "checkpoints" / name, manifest, "test", output)
        timings[f"generate_{name}_reports_per_second"] = generated / timings[f"generate_{name}"]
        records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        with _timed(timings, f"evaluate_{name}"):
            results[name] = evaluate_records(records, clean=config.evaluate.clean)

    metrics = dict(results[last])
    if first != last:
        metrics[first] = results[first]
    timings["total"] = time.perf_counter() - started
    metrics["demo"] = {
        "stages": [s.__dict__ for s in stages],
        "seconds": timings,
        "peak_memory_mib": _peak_memory_mib(),
        "test_studies": generated,
        "cpu": cpu,
    }
    atomic.write_json(out / "metrics.json", metrics)
    print("[5/5] test metrics (phantom test split, generated from images alone)")
    print(format_table({f"after {n.upper()}": results[n] for n in results}))
    for stage in stages:
        print(f"  {stage.name}: {stage.samples_per_second:.1f} training samples/s, best val loss {stage.best_val_loss:.4f}")
    curves = [str(out / n) for n in ("curves.csv", "curves.png") if (out / n).is_file()]
    print(f"  training curves (train and validation loss per stage): {', '.join(curves)}")
    for name in results:
        print(f"  generation with {name}: {timings[f'generate_{name}_reports_per_second']:.1f} reports/s")
    print(
        f"wall time {timings['total']:.0f} s, peak memory {metrics['demo']['peak_memory_mib']:.0f} MiB "
        f"(this process; METEOR's Java runs beside it); wrote {out / 'metrics.json'}"
    )
    return metrics


def _clear_derived(out: Path, previous: dict, wanted: dict) -> None:
    """A new phantom invalidates everything built from the old one: base models, run config, checkpoints, results."""
    print(f"the phantom in {out} was drawn with {previous}, not {wanted}: removing what was built from it")
    for name in ("base_models", "checkpoints", "images"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("config.yaml", "predictions.jsonl", "metrics.json"):
        (out / name).unlink(missing_ok=True)
    for path in out.glob("predictions_*.jsonl"):
        path.unlink()


def _phantom_parameters(out: Path) -> dict | None:
    report = out / "prepare_report.json"
    if not (out / "manifest.jsonl").is_file() or not report.is_file():
        return None
    data = json.loads(report.read_text(encoding="utf-8"))
    return data.get("parameters")


class _timed:
    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.key] = time.perf_counter() - self.start


def _peak_memory_mib() -> float:
    """Peak resident memory of this process (not of METEOR's Java subprocess)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
