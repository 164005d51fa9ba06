"""The curriculum trainer (paper: Training Protocol of PAG) on HF accelerate.

Stages run in sequence; each starts from the previous stage's best weights,
trains what :mod:`training.curriculum` says with AdamW and a cosine schedule
with warm-up, measures validation loss every ``eval_every`` steps (or at each
epoch's end) and stops once it has not improved for ``patience`` evaluations.
Because the loop only speaks accelerate, ``accelerate launch`` runs it on many
GPUs or nodes, in bf16, without code changes; ``train.batch_size`` is per
device.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from s2d_align.config import (
    Config, StageConfig, check_config, check_model_paths, differing_keys, load_config, save_config, to_dict,
)
from s2d_align.data.dataset import Collator, TrainingDataset
from s2d_align.data.image_checks import ImageCheckCache, check_shard
from s2d_align.data.manifest import Study, check_image_paths, read_manifest
from s2d_align.training import checkpoint as ckpt
from s2d_align.training.curriculum import apply_stage, stage_contexts
from s2d_align.training.curves import write_curves
from s2d_align.data.report_tokens import CACHE_FILE as REPORT_TOKENS_FILE
from s2d_align.data.report_tokens import report_token_counts
from s2d_align.training.sampler import LengthGroupedSampler, capped_lengths


class TrainingError(ValueError):
    """Training cannot go on; the message says what was kept and what to do (the CLI prints it, no traceback)."""


@dataclass
class StageResult:
    name: str
    best_val_loss: float
    epochs_run: float
    steps: int
    samples_per_second: float
    stopped: str
    history: list[dict] = field(default_factory=list)


def train(config: Config, out: Path, trust_remote_code: bool = False) -> list[StageResult]:
    """Run every stage of ``config.train.stages`` into ``out/checkpoints/<stage>``, resuming what was done.

    ``trust_remote_code``: let base models run their hub code (the command line's opt-in).
    """
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(out)
    _check_run_folder(config, out)  # nothing is written to ``out`` until every start-up check has passed
    check_config(config)
    check_model_paths(config)
    manifest = Path(config.data.manifest)
    studies = read_manifest(manifest)
    check_image_paths(studies, manifest, [config.data.image_root], config.data.allow_absolute_paths)
    train_studies = [s for s in studies if s.split == "train"]
    val_studies = [s for s in studies if s.split == "val"]
    if not train_studies or not val_studies:
        raise TrainingError(f"{manifest}: training needs train and val studies (have {len(train_studies)} / {len(val_studies)})")
    _check_references(studies, manifest)

    multi_context = any(len(s.contexts) > 1 for s in config.train.stages)
    accelerator = Accelerator(
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=multi_context)],
    )
    _check_images(accelerator, train_studies + val_studies, manifest, config, out)

    set_seed(config.train.seed)
    from s2d_align.models.model import build_model

    built = build_model(config.model, trust_remote_code=trust_remote_code)
    model = built.model
    _claim_run_folder(config, out)
    counts, counted = report_token_counts(built.tokenizers.llm, [s.findings for s in train_studies],
                                          out / REPORT_TOKENS_FILE, write=accelerator.is_main_process)
    accelerator.print(f"report tokens: {len(counts)} training reports; {counted} distinct texts counted now, "
                      f"the rest remembered ({REPORT_TOKENS_FILE})")
    budget = config.data.max_report_tokens - 1
    cut = sum(n > budget for n in counts)
    if cut:
        accelerator.print(
            f"{cut} of {len(train_studies)} training reports exceed data.max_report_tokens="
            f"{config.data.max_report_tokens}; each is cut at its last whole sentence that fits"
        )
    collate = Collator(
        built.tokenizers.llm, built.tokenizers.text, config.data.max_report_tokens, config.model.text.max_length
    )
    findings = {s.id: s.findings for s in studies}
    report_tokens = None
    if config.train.group_by_length:
        report_tokens = dict(zip([s.id for s in train_studies], capped_lengths(counts, config.data.max_report_tokens)))

    results = []
    for stage in config.train.stages:
        directory = out / "checkpoints" / stage.name
        meta = ckpt.read_meta(directory)
        if meta and meta.get("complete"):
            ckpt.load_weights(directory, model)
            accelerator.print(f"stage {stage.name}: already complete (best val loss {meta['best_val_loss']:.4f})")
            results.append(_result_from_meta(stage.name, meta))
            continue
        uses_reference = any("reference" in c for c in stage_contexts(stage))
        skip = uses_reference and config.data.missing_reference == "skip"
        datasets = [
            TrainingDataset(
                [s for s in split if not (skip and s.reference_id is None)],
                findings,
                manifest,
                built.preprocess,
                config.data.max_images,
                config.data.max_key_phrases,
                seed=config.train.seed,
            )
            for split in (train_studies, val_studies)
        ]
        result = _run_stage(accelerator, config, stage, model, datasets, collate, directory, report_tokens)
        results.append(result)
        accelerator.free_memory()
    if accelerator.is_main_process:
        write_curves(out, results)
    return results


def cosine_schedule(optimizer, warmup_steps: int, total_steps: int, num_processes: int):
    """Cosine schedule with warm-up over ``total_steps`` optimizer steps, for ``accelerator.prepare``.

    A prepared scheduler advances ``num_processes`` times per optimizer step
    (accelerate's convention when batches are not split), so its lengths are
    counted in those units; otherwise N GPUs would run the schedule N times over.
    """
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup_steps * num_processes, total_steps * num_processes)


def optimizer_steps_per_epoch(batches: int, num_processes: int, grad_accum_steps: int) -> int:
    """Optimizer steps in one epoch of ``batches`` (the unsharded loader's): dealt to the processes, then accumulated."""
    return math.ceil(batches / num_processes / grad_accum_steps)


def _run_stage(accelerator, config: Config, stage: StageConfig, model, datasets, collate, directory: Path, report_tokens=None) -> StageResult:
    settings = config.train
    if stage.epochs < 1:
        raise TrainingError(f"stage {stage.name}: epochs must be at least 1, got {stage.epochs}")
    contexts = stage_contexts(stage)
    params = apply_stage(model, stage)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr,
        betas=settings.adam_betas,
    )
    train_set, val_set = datasets
    sampler = None
    if report_tokens is not None:
        sampler = LengthGroupedSampler(
            [report_tokens[s.id] for s in train_set.studies], settings.batch_size, accelerator.num_processes, settings.seed
        )
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=settings.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.data.num_workers,
        drop_last=False,
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=settings.eval_batch_size, collate_fn=collate, num_workers=config.data.num_workers
    )
    steps_per_epoch = optimizer_steps_per_epoch(len(train_loader), accelerator.num_processes, settings.grad_accum_steps)
    total_steps = steps_per_epoch * stage.epochs  # at least 1: a stage has a training study and an epoch
    scheduler = cosine_schedule(optimizer, min(stage.warmup_steps, total_steps), total_steps, accelerator.num_processes)
    wrapped, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )

    state = {"epoch": 0, "batch": 0, "step": 0, "best_val_loss": math.inf, "bad_evals": 0, "history": []}
    resumed = ckpt.load_resume_state(directory, accelerator.unwrap_model(wrapped), optimizer, scheduler)
    pending_rng = None  # restored where it was saved: at an epoch's start, or after this epoch's loader began
    if resumed:
        state.update({k: resumed[k] for k in state})
        accelerator.print(f"stage {stage.name}: resuming at epoch {state['epoch'] + 1}, step {state['step']}")
        pending_rng = ckpt.load_rng_state(directory, accelerator.process_index)
        if pending_rng is not None and state["batch"] == 0:
            ckpt.restore_rng_state(pending_rng)
            pending_rng = None

    eval_every = settings.eval_every or steps_per_epoch
    stopped = "max epochs"
    epochs_run = state["epoch"] + bool(state["batch"])  # the epochs begun so far
    first_epoch = state["epoch"]
    if state["bad_evals"] >= stage.patience:  # interrupted right after patience ran out
        stopped, first_epoch = f"no improvement in {stage.patience} evaluations", stage.epochs
    samples, train_seconds, running = 0, 0.0, []
    for epoch in range(first_epoch, stage.epochs):
        epochs_run = epoch + 1
        # accelerate passes the epoch on to the dataset (its key-phrase draws) and to the length-grouped sampler
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, state["batch"]) if state["batch"] else train_loader
        bar = tqdm(
            loader,
            total=len(train_loader),
            initial=state["batch"],
            desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
            unit="batch",
            disable=not accelerator.is_local_main_process,
            leave=False,
        )
        wrapped.train()
        for batch in bar:
            if pending_rng is not None:
                ckpt.restore_rng_state(pending_rng)
                pending_rng = None
            started = time.perf_counter()
            context = _pick_context(contexts, settings.seed, stage.name, state["step"])
            with accelerator.accumulate(wrapped):
                loss_sum, count = wrapped(batch, context)
                loss = loss_sum.sum() / count.sum().clamp(min=1)
                finite = accelerator.gather(torch.isfinite(loss.detach()).reshape(1))
                if not bool(finite.all()):
                    _stop_on_non_finite(accelerator, stage, directory, state, "training loss", loss.item())
                accelerator.backward(loss)
                if accelerator.sync_gradients:  # train.max_grad_norm is positive (config.py)
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            train_seconds += time.perf_counter() - started
            samples += len(batch["ids"]) * accelerator.num_processes
            running.append(loss.item())
            state["batch"] += 1
            if accelerator.sync_gradients:
                state["step"] += 1
                bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
                epoch_end = state["batch"] == len(train_loader)
                last_step = epoch_end and epoch + 1 == stage.epochs
                if state["step"] % eval_every == 0 or (epoch_end and not settings.eval_every) or last_step:
                    if _evaluate_and_track(accelerator, config, stage, wrapped, val_loader, contexts, directory, state, running, epoch, epoch_end, optimizer, scheduler):
                        stopped = f"no improvement in {stage.patience} evaluations"
                        break
        bar.close()
        if stopped != "max epochs":
            break
        state["epoch"], state["batch"] = epoch + 1, 0

    speed = samples / train_seconds if train_seconds else 0.0
    accelerator.wait_for_everyone()
    ckpt.load_weights(directory, accelerator.unwrap_model(wrapped))  # continue from the best weights
    if accelerator.is_main_process:
        meta = ckpt.read_meta(directory) or {}
        meta.update(complete=True, stopped=stopped, samples_per_second=speed, history=state["history"])
        ckpt.write_meta(directory, meta)
        ckpt.drop_resume_state(directory)
    accelerator.wait_for_everyone()
    accelerator.print(
        f"stage {stage.name}: best val loss {state['best_val_loss']:.4f} after {state['step']} steps "
        f"({stopped}); {speed:.1f} samples/s"
    )
    return StageResult(stage.name, state["best_val_loss"], epochs_run, state["step"], speed, stopped, state["history"])


def _evaluate_and_track(accelerator, config, stage, wrapped, val_loader, contexts, directory, state, running, epoch, epoch_end, optimizer, scheduler) -> bool:
    """Measure validation loss, keep the best weights, save resume state; True when patience ran out."""
    val_loss = validation_loss(accelerator, wrapped, val_loader, contexts, config.train.max_val_batches)
    if not math.isfinite(val_loss):
        _stop_on_non_finite(accelerator, stage, directory, state, "validation loss", val_loss)
    train_loss = sum(running) / len(running)  # every evaluation follows at least one training batch
    running.clear()
    state["history"].append({"step": state["step"], "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
    improved = val_loss < state["best_val_loss"] - config.train.min_delta
    if improved:
        state["best_val_loss"], state["bad_evals"] = val_loss, 0
    else:
        state["bad_evals"] += 1
    unwrapped = accelerator.unwrap_model(wrapped)
    if accelerator.is_main_process:
        if improved:
            meta = {
                "stage": stage.name,
                "epoch": epoch + 1,
                "step": state["step"],
                "val_loss": val_loss,
                "best_val_loss": val_loss,
                "complete": False,
            }
            ckpt.save_checkpoint(directory, unwrapped, config, meta)
        ckpt.begin_resume_state(directory)
    accelerator.wait_for_everyone()
    ckpt.save_rng_state(directory, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # At an epoch's end the run goes on with the next epoch's first batch.
        position = {"epoch": epoch + 1, "batch": 0} if epoch_end else {}
        ckpt.save_resume_state(directory, unwrapped, optimizer, scheduler, {**state, **position})
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process:
        verdict = "best" if improved else f"no improvement {state['bad_evals']}/{stage.patience}"
        tqdm.write(f"{stage.name} step {state['step']}: train loss {train_loss:.4f}, val loss {val_loss:.4f} ({verdict})")
    return state["bad_evals"] >= stage.patience


@torch.no_grad()
def validation_loss(accelerator, wrapped, loader, contexts, max_batches: int = 0) -> float:
    """Mean report-token loss over the validation split, averaged over the stage's contexts."""
    wrapped.eval()
    losses = []
    for context in contexts:
        total, count = 0.0, 0.0
        for index, batch in enumerate(loader):
            if max_batches and index >= max_batches:
                break
            loss_sum, tokens = wrapped(batch, context)
            loss_sum, tokens = accelerator.gather_for_metrics((loss_sum, tokens))
            total += loss_sum.sum().item()
            count += tokens.sum().item()
        losses.append(total / max(count, 1.0))
    wrapped.train()
    return sum(losses) / len(losses)


def _pick_context(contexts: list[tuple[str, ...]], seed: int, stage: str, step: int) -> tuple[str, ...]:
    """The joint ablation draws a context per batch, identically on every process."""
    if len(contexts) == 1:
        return contexts[0]
    return random.Random(f"{seed}:{stage}:{step}").choice(contexts)


def _stop_on_non_finite(accelerator, stage, directory, state, what: str, value: float) -> None:
    """End the stage at its last good checkpoint (marked complete) and stop the run with what to do next."""
    meta = ckpt.read_meta(directory)
    if meta is not None and accelerator.is_main_process:
        meta.update(complete=True, stopped=f"non-finite {what} at step {state['step']}", history=state["history"])
        ckpt.write_meta(directory, meta)
        ckpt.drop_resume_state(directory)
    accelerator.wait_for_everyone()
    retrain = f"to train stage {stage.name} again with a lower learning rate (train.stages.{stage.name}.lr), use a new --out"
    if meta:
        advice = (
            f"the last good checkpoint (step {meta['step']}, val loss {meta['val_loss']:.4f}) is kept in {directory} "
            f"and the stage counts as done: running train again on this folder goes on from it; {retrain}"
        )
    else:
        advice = f"no checkpoint of this stage was good yet, so the previous stage's is the last good one; {retrain}"
    raise TrainingError(f"stage {stage.name} stopped at step {state['step']}: the {what} is {value}; {advice}.")


def _check_run_folder(config: Config, out: Path) -> None:
    """A run folder belongs to one config: resuming with another would mix two experiments.

    Only reads; the error lists the keys that differ.
    """
    path = out / "config.yaml"
    if not path.is_file():
        return
    previous = load_config(path, saved=True)  # written by a train (perhaps an older version): its remote-code keys are dropped
    keys = differing_keys(previous, config)
    if keys:
        flat_old, flat_new = _flat(previous), _flat(config)
        shown = "\n".join(f"  {k}: {flat_old.get(k)!r} there, {flat_new.get(k)!r} now" for k in keys[:20])
        more = f"\n  ... and {len(keys) - 20} more" if len(keys) > 20 else ""
        raise TrainingError(
            f"{out} holds a run with a different config ({path}); {len(keys)} key(s) differ:\n{shown}{more}\n"
            "use another --out, or the same recipe and overrides to resume"
        )


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    data = to_dict(config)
    if isinstance(data, dict):
        return {k: v for name, value in data.items() for k, v in _flat(value, f"{prefix}.{name}" if prefix else name).items()}
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        return {k: v for i, value in enumerate(data) for k, v in _flat(value, f"{prefix}[{i}]").items()}
    return {prefix: data}


def _claim_run_folder(config: Config, out: Path) -> None:
    """Write the run's config once every start-up check has passed, so that a failed start leaves ``out`` as it was.

    Every process checks; only the main one writes (atomically, so the others read all of it or nothing).
    """
    from accelerate import PartialState

    _check_run_folder(config, out)
    if not (out / "config.yaml").is_file() and PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")


def _check_references(studies: list[Study], manifest: Path) -> None:
    """A training sample's reference never comes from a validation or test study."""
    split_of = {s.id: s.split for s in studies}
    leaks = [s.id for s in studies if s.split == "train" and s.reference_id and split_of[s.reference_id] != "train"]
    if leaks:
        raise TrainingError(f"{manifest}: training studies reference non-training studies: {leaks[:10]}")


def _check_images(accelerator, studies: list[Study], manifest: Path, config: Config, out: Path) -> None:
    """The start-up image check (see :mod:`s2d_align.data.image_checks`): each rank checks its shard.

    Only the images a stage can read are checked (the first ``max_images`` of a
    study). Passes are gathered on the main process into ``out/image_checks.json``;
    every rank raises the same error when any image failed.
    """
    from accelerate.utils import gather_object

    level = config.data.image_check
    folder = Path(manifest).resolve().parent  # resolved once: resolving per image costs minutes on 300k images
    items = [
        (s.id, Path(p) if Path(p).is_absolute() else folder / p) for s in studies for p in s.images[: config.data.max_images]
    ]
    cache = ImageCheckCache(out / "image_checks.json")
    started = time.perf_counter()
    shard = items[accelerator.process_index :: accelerator.num_processes]
    problems, passed, checked = check_shard(shard, level, cache, config.data.image_check_workers)
    if accelerator.num_processes > 1:
        problems = gather_object(problems)
        passed = {k: v for part in gather_object([passed]) for k, v in part.items()}
        checked = sum(gather_object([checked]))
    if passed and accelerator.is_main_process:
        cache.update(passed)
        cache.save()
    accelerator.wait_for_everyone()
    accelerator.print(
        f"image check ({level}): {len(items)} images, {checked} opened, {len(items) - checked} remembered, "
        f"{time.perf_counter() - started:.1f} s"
    )
    if problems:
        problems.sort()
        listing = "\n".join(f"  {rid}: {path} ({reason})" for rid, path, reason in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise TrainingError(
            f"{len(problems)} image(s) of {manifest} cannot be read; fix or remove these records before training:\n"
            f"{listing}{more}"
        )


def _result_from_meta(name: str, meta: dict) -> StageResult:
    return StageResult(
        name,
        meta["best_val_loss"],
        meta.get("epoch", 0),
        meta.get("step", 0),
        meta.get("samples_per_second", 0.0),
        meta.get("stopped", ""),
        meta.get("history", []),
    )
