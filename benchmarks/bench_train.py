"""Training throughput and MFU per stage: the bare step against the trainer, side by side.

For each stage of the recipe this measures

* the **bare step**: forward + backward + AdamW on batches collated before
  timing (no data loading, no accelerate, no logging), best of ``--repeats``
  timings of ``--steps`` steps;
* its **FLOPs** per step, counted by ``torch.utils.flop_counter.FlopCounterMode``
  over one forward + backward;
* **MFU** = FLOPs per step / step time / peak, against a float32 matmul peak
  measured in the same run, interleaved with the stage's step timings (each
  repeat times the matmuls, then the steps) and printed per stage: on a
  shared machine the peak itself moves from one minute to the next, and a
  peak taken once at the start made MFU swing with it;
* the **trainer**: ``s2d_align.training.loop.train`` on the same manifest, one
  epoch of the stage, its samples/s over wall time from the stage's start to
  its end (data loading and the one evaluation, capped at one batch, included)
  and the step-only samples/s the trainer itself reports.

Default: the demo recipe on the phantom and tiny models that
``benchmarks/bench_padding.py --work DIR`` builds: run that first. A real-shaped run is ``--config mimic_cxr/s2d_align``
with model paths pointing at real-shaped stand-ins (``--override``).

    PYTHONPATH=src python benchmarks/bench_train.py --work /tmp/bench-padding
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch


def matmul_peak(size: int = 1024, repeats: int = 20, tries: int = 3) -> float:
    """FLOP/s of float32 square matmuls on this machine, now (best of ``tries``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best


def bare_step(model, params, batches, context, optimizer) -> None:
    for batch in batches:
        loss_sum, count = model(batch, context)
        (loss_sum.sum() / count.sum().clamp(min=1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-padding"))
    parser.add_argument("--config", default="demo")
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-studies", type=int, default=320, help="training studies the trainer epoch runs over")
    args = parser.parse_args(argv)
    from torch.utils.flop_counter import FlopCounterMode

    from s2d_align.config import load_config
    from s2d_align.data.dataset import Collator, TrainingDataset
    from s2d_align.data.manifest import read_manifest, write_manifest
    from s2d_align.models.model import build_model
    from s2d_align.training.curriculum import apply_stage, stage_contexts
    from s2d_align.training.loop import train

    base = args.work / "base_models"
    full = args.work / "manifest.jsonl"
    studies = read_manifest(full)
    train_studies = [s for s in studies if s.split == "train"][: args.train_studies]
    train_ids = {s.id for s in train_studies}
    # a reference outside the subset is dropped (an empty reference text, as data.missing_reference=empty feeds)
    train_studies = [s if s.reference_id in train_ids else dataclasses.replace(s, reference_id=None) for s in train_studies]
    subset = train_studies + [s for s in studies if s.split == "val"][:32]
    manifest = full.with_name("bench_train_manifest.jsonl")
    write_manifest(manifest, subset)
    overrides = [f"model.vision.name_or_path={base / 'vision'}", f"model.text.name_or_path={base / 'text'}",
                 f"model.llm.name_or_path={base / 'llm'}", f"data.manifest={manifest}", *args.override]
    config = load_config(args.config, overrides)
    torch.manual_seed(0)
    built = build_model(config.model)
    model = built.model.train()
    collate = Collator(built.tokenizers.llm, built.tokenizers.text, config.data.max_report_tokens, config.model.text.max_length)
    findings = {s.id: s.findings for s in subset}
    dataset = TrainingDataset(train_studies, findings, full, built.preprocess, config.data.max_images, config.data.max_key_phrases)
    size = config.train.batch_size
    batches = [collate([dataset[i * size + j] for j in range(size)]) for i in range(args.steps)]

    print(f"matmul peak: float32, 1024^3, {torch.get_num_threads()} threads, best of the stage's repeats")
    print(f"{'stage':<6} {'GFLOP/step':>10} {'bare s/step':>11} {'bare samp/s':>11} {'peak GF/s':>9} {'MFU':>6} "
          f"{'trainer samp/s (wall)':>21} {'(steps only)':>12} {'wall/bare':>9}")
    for stage in config.train.stages:
        params = apply_stage(model, stage)
        context = stage_contexts(stage)[0]
        optimizer = torch.optim.AdamW(params, lr=0.0)
        with FlopCounterMode(display=False) as counter:
            loss_sum, count = model(batches[0], context)
            (loss_sum.sum() / count.sum()).backward()
        optimizer.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
        bare_step(model, params, batches[:1], context, optimizer)  # warm-up
        best, peak = float("inf"), 0.0
        for _ in range(args.repeats):
            peak = max(peak, matmul_peak(tries=1))
            started = time.perf_counter()
            bare_step(model, params, batches, context, optimizer)
            best = min(best, (time.perf_counter() - started) / len(batches))
        bare = size / best
        run = args.work / f"bench_train_run_{stage.name}"
        import shutil

        shutil.rmtree(run, ignore_errors=True)
        one = load_config(args.config, [*overrides, f"train.stages=[{{name: {stage.name}, contexts: [{context and '+'.join(context)}], "
                                                    f"lora: {str(stage.lora).lower()}, epochs: 1, lr: {stage.lr}}}]",
                                        "train.max_val_batches=1"])
        started = time.perf_counter()
        (result,) = train(one, run)
        wall = time.perf_counter() - started
        trainer = len(train_studies) / wall
        print(f"{stage.name:<6} {flops / 1e9:>10.2f} {best:>11.3f} {bare:>11.1f} {peak / 1e9:>9.1f} {flops / best / peak:>6.1%} "
              f"{trainer:>21.1f} {result.samples_per_second:>12.1f} {trainer / bare:>9.0%}")


if __name__ == "__main__":
    main()
