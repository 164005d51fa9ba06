"""The stage loop of :mod:`s2d_align.training.loop` at unit speed, on a two-parameter stand-in model.

``_run_stage`` is driven as ``train`` drives it, with a real accelerate
``Accelerator`` and the real checkpoint and resume files; only the model is a
stand-in (one 2-D weight, one 1-D bias) whose checkpoint is its state dict, so
that each test runs in well under a second and every count (steps, evaluations,
learning rates, samples, clip calls) can be pinned exactly.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from s2d_align.config import load_config
from s2d_align.training import checkpoint as ckpt
from s2d_align.training import loop
from s2d_align.training.loop import StageResult, TrainingError, _run_stage, validation_loss
from s2d_align.training.sampler import LengthGroupedSampler
from tests.conftest import cosine_with_warmup, interrupted_after_evaluation

WEIGHTS = "stand-in.safetensors"


class StandIn(torch.nn.Module):
    """``forward(batch, context) -> (loss sum, token count)`` per study, as ``S2DAlign`` returns them.

    Records, per call: train or eval mode, the batch's study ids, the context,
    the first parameter group's learning rate (the one this step uses) and the
    batch's loss per token.
    """

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[1.0, 0.5], [-0.5, 1.0]]))
        self.bias = torch.nn.Parameter(torch.tensor([0.1, -0.2]))
        self.calls: list[dict] = []
        self.optimizer = None
        self.poison_at = None  # call number whose loss is NaN

    def forward(self, batch, context):
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None
        per_study = ((batch["x"] @ self.weight + self.bias) ** 2).sum(-1) * len(context)
        loss = (per_study.sum() / batch["tokens"].sum()).item()
        self.calls.append({"training": self.training, "ids": list(batch["ids"]), "context": context, "lr": lr,
                           "loss": loss})
        if self.poison_at == len(self.calls):
            per_study = per_study * float("nan")
        return per_study, batch["tokens"].float()

    def training_calls(self):
        return [c for c in self.calls if c["training"]]


class Studies(torch.utils.data.Dataset):
    """``TrainingDataset``'s interface: ``studies``, ``set_epoch`` and one item per study."""

    def __init__(self, n: int, first: int = 0):
        self.studies = [SimpleNamespace(id=f"s{i}") for i in range(first, first + n)]
        self.epochs: list[int] = []

    def __len__(self):
        return len(self.studies)

    def __getitem__(self, index):
        number = int(self.studies[index].id[1:])
        return {"id": self.studies[index].id, "x": torch.tensor([number / 10, 1.0]), "tokens": number % 3 + 1}

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def collate(items):
    return {"ids": [i["id"] for i in items], "x": torch.stack([i["x"] for i in items]),
            "tokens": torch.tensor([i["tokens"] for i in items])}


@pytest.fixture
def harness(monkeypatch, tmp_path):
    """Checkpoints of the stand-in are its state dict; ``apply_stage`` trains both its parameters."""

    def save_weights(directory, model):
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS))

    def load_weights(directory, model):
        model.load_state_dict(load_file(str(directory / WEIGHTS)))

    monkeypatch.setattr(ckpt, "save_weights", save_weights)
    monkeypatch.setattr(ckpt, "load_weights", load_weights)
    monkeypatch.setattr(loop, "apply_stage", lambda model, stage: [model.weight, model.bias])

    def run(stage: str, *overrides: str, train_n=8, val_n=3, model=None, report_tokens=None, directory=None):
        from accelerate import Accelerator, DataLoaderConfiguration

        config = load_config(None, [f"train.stages=[{stage}]", "train.mixed_precision=no", "train.batch_size=2",
                                    "train.eval_batch_size=2", *overrides])
        accelerator = Accelerator(cpu=True, mixed_precision="no",
                                  gradient_accumulation_steps=config.train.grad_accum_steps,
                                  dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
        torch.manual_seed(0)
        model = model or StandIn()
        datasets = [Studies(train_n), Studies(val_n, first=100)]
        adamw = torch.optim.AdamW

        def bound(*args, **kwargs):  # the stand-in reads the learning rate its step uses
            model.optimizer = adamw(*args, **kwargs)
            return model.optimizer

        monkeypatch.setattr(torch.optim, "AdamW", bound)
        directory = directory or tmp_path / "checkpoints" / config.train.stages[0].name
        try:
            result = _run_stage(accelerator, config, config.train.stages[0], model, datasets, collate, directory,
                                report_tokens)
        finally:
            monkeypatch.setattr(torch.optim, "AdamW", adamw)
        return SimpleNamespace(result=result, model=model, datasets=datasets, directory=directory,
                               optimizer=model.optimizer, config=config)

    return run


def test_a_stage_trains_every_batch_of_every_epoch_and_evaluates_at_each_epoch_end(harness, capsys):
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, warmup_steps: 2, patience: 5}")
    result, model = run.result, run.model
    train_calls = model.training_calls()
    assert len(train_calls) == 8  # 8 studies in batches of 2, two epochs
    for epoch in (train_calls[:4], train_calls[4:]):
        assert sorted(i for c in epoch for i in c["ids"]) == [f"s{i}" for i in range(8)]
    assert [c["ids"] for c in train_calls[:4]] != [c["ids"] for c in train_calls[4:]]  # reshuffled per epoch
    assert [c["lr"] for c in train_calls] == pytest.approx([0.01 * cosine_with_warmup(s, 2, 8) for s in range(8)])
    assert list(dict.fromkeys(run.datasets[0].epochs)) == [0, 1]  # the key-phrase draws follow the epoch
    assert (result.name, result.steps, result.epochs_run, result.stopped) == ("s1", 8, 2, "max epochs")
    assert [(h["step"], h["epoch"]) for h in result.history] == [(4, 1), (8, 2)]
    evals = [c for c in model.calls if not c["training"]]
    assert [c["ids"] for c in evals] == [["s100", "s101"], ["s102"]] * 2  # eval_batch_size, not shuffled
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    meta = ckpt.read_meta(run.directory)
    assert meta["complete"] is True and meta["stopped"] == "max epochs" and meta["history"] == result.history
    assert meta["stage"] == "s1" and meta["samples_per_second"] == result.samples_per_second > 0
    assert not (run.directory / ckpt.LAST_DIR).exists()
    out = capsys.readouterr().out
    assert f"stage s1: best val loss {result.best_val_loss:.4f} after 8 steps (max epochs); " in out


@pytest.mark.parametrize("batch", [1, 2])
def test_the_train_loss_of_an_evaluation_is_the_mean_since_the_previous_one(harness, batch):
    """Each batch's loss is per report token (batches of one study include one of a single token)."""
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 5}", f"train.batch_size={batch}")
    losses = [c["loss"] for c in run.model.training_calls()]
    half = len(losses) // 2
    assert [h["train_loss"] for h in run.result.history] == pytest.approx([sum(losses[:half]) / half,
                                                                           sum(losses[half:]) / half])


def test_the_optimizer_decays_two_dimensional_weights_only_with_the_recipes_betas(harness):
    run = harness("{name: s1, contexts: [image], lr: 0.003}", "train.weight_decay=0.3", "train.adam_betas=[0.8, 0.95]")
    decayed, plain = run.optimizer.param_groups
    assert decayed["params"] == [run.model.weight] and decayed["weight_decay"] == 0.3
    assert plain["params"] == [run.model.bias] and plain["weight_decay"] == 0.0
    assert decayed["betas"] == plain["betas"] == (0.8, 0.95)
    assert decayed["initial_lr"] == plain["initial_lr"] == 0.003


def test_gradient_accumulation_counts_optimizer_steps(harness):
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, warmup_steps: 1, patience: 5}",
                  "train.grad_accum_steps=2")
    # 4 batches per epoch, 2 per optimizer step: 2 steps per epoch, 4 in all
    assert run.result.steps == 4
    assert [h["step"] for h in run.result.history] == [2, 4]
    lrs = [c["lr"] for c in run.model.training_calls()]
    assert lrs == pytest.approx([0.01 * cosine_with_warmup(s // 2, 1, 4) for s in range(8)])


def test_eval_every_counts_optimizer_steps_and_the_last_step_is_always_evaluated(harness):
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 9}", "train.eval_every=3")
    assert [(h["step"], h["epoch"]) for h in run.result.history] == [(3, 1), (6, 2), (8, 2)]


def test_warm_up_longer_than_the_stage_is_cut_to_the_stage(harness):
    run = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01, warmup_steps: 100}")
    assert [c["lr"] for c in run.model.training_calls()] == pytest.approx([0.0, 0.0025, 0.005, 0.0075])


def test_a_stage_shorter_than_one_epoch_is_refused_by_name():
    config = load_config(None, ["train.stages=[{name: s9, contexts: [image]}]"])
    stage = SimpleNamespace(**{**vars(config.train.stages[0]), "epochs": 0})
    with pytest.raises(TrainingError, match="^stage s9: epochs must be at least 1, got 0$"):
        _run_stage(None, config, stage, None, None, None, None)


def test_patience_ends_the_stage_at_the_evaluation_that_used_it_up(harness, monkeypatch):
    values = iter([0.9, 0.8, 0.85, 0.81, 0.7])
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: next(values))
    run = harness("{name: s1, contexts: [image], epochs: 3, lr: 0.01, patience: 2}", "train.eval_every=1")
    result = run.result
    assert (result.steps, result.epochs_run) == (4, 1)
    assert result.stopped == "no improvement in 2 evaluations"
    assert result.best_val_loss == 0.8
    assert [h["val_loss"] for h in result.history] == [0.9, 0.8, 0.85, 0.81]
    assert ckpt.read_meta(run.directory)["step"] == 2  # the best weights are the ones kept
    assert len(run.model.training_calls()) == 4


def test_the_stage_ends_on_its_best_weights(harness, monkeypatch):
    values = iter([0.9, 0.5, 0.7, 0.8])
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: next(values))
    snapshots = {}
    real = loop._evaluate_and_track

    def snapshot(accelerator, config, stage, wrapped, *args):
        stop = real(accelerator, config, stage, wrapped, *args)
        snapshots[len(snapshots) + 1] = accelerator.unwrap_model(wrapped).weight.detach().clone()
        return stop

    monkeypatch.setattr(loop, "_evaluate_and_track", snapshot)
    run = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.05, patience: 5}", "train.eval_every=1")
    assert run.result.best_val_loss == 0.5
    assert torch.equal(run.model.weight.detach(), snapshots[2])
    assert not torch.equal(snapshots[2], snapshots[4])


def test_gradients_are_clipped_to_the_recipes_norm_at_each_optimizer_step(harness, monkeypatch):
    from accelerate import Accelerator

    clipped = []
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, params, norm: clipped.append((list(params), norm)))
    run = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", "train.max_grad_norm=0.25",
                  "train.grad_accum_steps=2")
    assert [norm for _, norm in clipped] == [0.25, 0.25]
    assert all(params == [run.model.weight, run.model.bias] for params, _ in clipped)


def test_length_grouped_batches_follow_the_sampler_and_others_are_shuffled_by_the_seed(harness):
    lengths = {f"s{i}": (5 * i) % 7 + 1 for i in range(8)}
    grouped = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 5}", report_tokens=lengths)
    sampler = LengthGroupedSampler([lengths[f"s{i}"] for i in range(8)], 2, 1, 42)
    expected = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = [f"s{i}" for i in sampler]
        expected += [order[k : k + 2] for k in range(0, 8, 2)]
    assert [c["ids"] for c in grouped.model.training_calls()] == expected
    shuffled = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", directory=grouped.directory.parent / "b")
    again = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", directory=grouped.directory.parent / "c")
    ids = [c["ids"] for c in shuffled.model.training_calls()]
    assert ids == [c["ids"] for c in again.model.training_calls()]
    assert ids != [["s0", "s1"], ["s2", "s3"], ["s4", "s5"], ["s6", "s7"]]


def test_the_last_short_batch_is_trained(harness):
    run = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", train_n=7)
    assert sorted(len(c["ids"]) for c in run.model.training_calls()) == [1, 2, 2, 2]
    assert run.result.steps == 4


def test_samples_per_second_counts_training_time_only(harness, monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(ticks) * 0.5)
    run = harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", train_n=7)
    # each batch spans two clock reads (0.5 s); 7 studies in 4 batches
    assert run.result.samples_per_second == 7 / (4 * 0.5)


@pytest.mark.parametrize("count", [2, 3])
def test_the_joint_ablation_trains_each_step_on_its_drawn_context(harness, count):
    contexts = ["image", "image+reference", "image+reference+key_phrases"][:count]
    run = harness(f"{{name: joint, contexts: [{', '.join(contexts)}], epochs: 2, lr: 0.01}}")
    parsed = [("image",), ("image", "reference"), ("image", "reference", "key_phrases")][:count]
    drawn = [loop._pick_context(parsed, 42, "joint", step) for step in range(8)]
    assert [c["context"] for c in run.model.training_calls()] == drawn
    assert set(drawn) == set(parsed)
    evals = [c["context"] for c in run.model.calls if not c["training"]]
    assert evals == [p for p in parsed for _ in range(2)] * 2  # each evaluation: every context, two val batches each


def test_validation_loss_is_token_weighted_per_context_and_averaged_over_contexts():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = StandIn()
    model.train()
    loader = torch.utils.data.DataLoader(Studies(3, first=100), batch_size=2, collate_fn=collate)
    contexts = [("image",), ("image", "reference")]
    value = validation_loss(accelerator, model, loader, contexts)
    with torch.no_grad():
        sums, counts = model(collate([Studies(3, first=100)[i] for i in range(3)]), ("image",))
    per_token = (sums.sum() / counts.sum()).item()
    assert value == pytest.approx((per_token + 2 * per_token) / 2)
    assert model.training  # left as it was found
    first_batch = validation_loss(accelerator, model, loader, contexts[:1], max_batches=1)
    with torch.no_grad():
        sums, counts = model(collate([Studies(3, first=100)[i] for i in range(2)]), ("image",))
    assert first_batch == pytest.approx((sums.sum() / counts.sum()).item())
    assert [len(c["ids"]) for c in model.calls if not c["training"]] == [2, 1, 2, 1, 2]


def test_an_interrupted_stage_resumes_to_the_same_weights_counters_and_learning_rates(harness, monkeypatch):
    stage = "{name: s1, contexts: [image], epochs: 2, lr: 0.05, warmup_steps: 2, patience: 9}"
    straight = harness(stage, "train.eval_every=3")
    directory = straight.directory.parent / "resumed"
    with interrupted_after_evaluation(monkeypatch, 1):
        harness(stage, "train.eval_every=3", directory=directory)
    state = ckpt.read_meta(directory / ckpt.LAST_DIR)
    assert (state["epoch"], state["batch"], state["step"], state["bad_evals"]) == (0, 3, 3, 0)
    resumed = harness(stage, "train.eval_every=3", directory=directory)
    assert torch.equal(resumed.model.weight.detach(), straight.model.weight.detach())
    assert torch.equal(resumed.model.bias.detach(), straight.model.bias.detach())
    train_calls = resumed.model.training_calls()
    assert [c["ids"] for c in train_calls] == [c["ids"] for c in straight.model.training_calls()[3:]]
    assert [c["lr"] for c in train_calls] == pytest.approx([c["lr"] for c in straight.model.training_calls()[3:]])
    assert resumed.result.history == straight.result.history
    assert resumed.result.steps == straight.result.steps == 8


def test_a_stage_interrupted_at_an_epoch_end_resumes_at_the_next_epochs_first_batch(harness, monkeypatch):
    stage = "{name: s1, contexts: [image], epochs: 2, lr: 0.05, patience: 9}"
    straight = harness(stage)
    directory = straight.directory.parent / "resumed"
    with interrupted_after_evaluation(monkeypatch, 1):
        harness(stage, directory=directory)
    state = ckpt.read_meta(directory / ckpt.LAST_DIR)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 4)
    resumed = harness(stage, directory=directory)
    assert [c["ids"] for c in resumed.model.training_calls()] == [c["ids"] for c in straight.model.training_calls()[4:]]
    assert set(resumed.datasets[0].epochs) == {1}
    assert torch.equal(resumed.model.weight.detach(), straight.model.weight.detach())


def test_a_stage_interrupted_after_its_patience_ran_out_ends_without_training(harness, monkeypatch, capsys):
    values = iter([0.9, 0.95])
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: next(values))
    stage = "{name: s1, contexts: [image], epochs: 3, lr: 0.05, patience: 1}"
    with interrupted_after_evaluation(monkeypatch, 2):
        harness(stage, "train.eval_every=1")
    resumed = harness(stage, "train.eval_every=1")
    assert resumed.model.training_calls() == []
    assert resumed.result.stopped == "no improvement in 1 evaluations"
    assert resumed.result.steps == 2 and resumed.result.best_val_loss == 0.9
    assert resumed.result.epochs_run == 1  # the run was in its first epoch when patience ran out
    assert resumed.result.samples_per_second == 0.0  # nothing trained in this call
    assert "stage s1: resuming at epoch 1, step 2" in capsys.readouterr().out


def test_a_non_finite_training_loss_keeps_the_last_good_checkpoint_and_says_so(harness, tmp_path):
    model = StandIn()
    model.poison_at = 7  # calls 1-4 train epoch 1, 5-6 validate, 7 is epoch 2's first batch
    with pytest.raises(TrainingError) as caught:
        harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 5}", model=model)
    directory = tmp_path / "checkpoints" / "s1"
    meta = ckpt.read_meta(directory)
    assert meta["complete"] is True and meta["stopped"] == "non-finite training loss at step 4" and meta["step"] == 4
    first_epoch = [c["loss"] for c in model.training_calls()[:4]]
    assert meta["history"] == [{"step": 4, "epoch": 1, "train_loss": pytest.approx(sum(first_epoch) / 4),
                                "val_loss": meta["val_loss"]}]
    assert not (directory / ckpt.LAST_DIR).exists()
    assert str(caught.value) == (
        f"stage s1 stopped at step 4: the training loss is nan; the last good checkpoint (step 4, val loss "
        f"{meta['val_loss']:.4f}) is kept in {directory} and the stage counts as done: running train again on this "
        "folder goes on from it; to train stage s1 again with a lower learning rate (train.stages.s1.lr), use a new --out."
    )


def test_a_non_finite_validation_loss_stops_the_stage_too(harness, monkeypatch):
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: float("inf"))
    with pytest.raises(TrainingError, match="^stage s1 stopped at step 4: the validation loss is inf; no checkpoint"):
        harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01}")


def test_a_non_finite_loss_before_any_checkpoint_points_to_the_previous_stage(harness):
    model = StandIn()
    model.poison_at = 2
    with pytest.raises(TrainingError) as caught:
        harness("{name: s2, contexts: [image], epochs: 1, lr: 0.01}", model=model)
    assert str(caught.value) == (
        "stage s2 stopped at step 1: the training loss is nan; no checkpoint of this stage was good yet, so the "
        "previous stage's is the last good one; to train stage s2 again with a lower learning rate "
        "(train.stages.s2.lr), use a new --out."
    )


def test_an_evaluation_records_history_keeps_improvements_and_saves_where_to_resume(harness, monkeypatch, capsys):
    values = iter([0.5, 0.5, 0.6, 0.4])
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: next(values))
    saved = []
    real_save = ckpt.save_checkpoint
    monkeypatch.setattr(ckpt, "save_checkpoint",
                        lambda directory, model, config, meta: (saved.append(dict(meta)), real_save(directory, model, config, meta)))
    resume = []
    real_resume = ckpt.save_resume_state
    monkeypatch.setattr(ckpt, "save_resume_state",
                        lambda d, m, o, s, state: (resume.append(dict(state)), real_resume(d, m, o, s, state)))
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 3}", "train.eval_every=2")
    # 4 steps per epoch: evaluations at steps 2, 4 (epoch 1's end), 6 and 8 (the last)
    assert saved == [
        {"stage": "s1", "epoch": 1, "step": 2, "val_loss": 0.5, "best_val_loss": 0.5, "complete": False},
        {"stage": "s1", "epoch": 2, "step": 8, "val_loss": 0.4, "best_val_loss": 0.4, "complete": False},
    ]
    # mid-epoch the position is the batch reached; at an epoch's end, the next epoch's first batch
    assert [(r["epoch"], r["batch"], r["step"], r["bad_evals"], r["best_val_loss"]) for r in resume] == [
        (0, 2, 2, 0, 0.5), (1, 0, 4, 1, 0.5), (1, 2, 6, 2, 0.5), (2, 0, 8, 0, 0.4)]
    assert [(h["epoch"], h["val_loss"]) for h in resume[-1]["history"]] == [(1, 0.5), (1, 0.5), (2, 0.6), (2, 0.4)]
    assert run.result.best_val_loss == 0.4
    losses = [h["train_loss"] for h in run.result.history]
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("s1 step")] == [
        f"s1 step 2: train loss {losses[0]:.4f}, val loss 0.5000 (best)",
        f"s1 step 4: train loss {losses[1]:.4f}, val loss 0.5000 (no improvement 1/3)",
        f"s1 step 6: train loss {losses[2]:.4f}, val loss 0.6000 (no improvement 2/3)",
        f"s1 step 8: train loss {losses[3]:.4f}, val loss 0.4000 (best)",
    ]


def test_validation_reads_at_most_max_val_batches_per_context(harness):
    run = harness("{name: s1, contexts: [image], epochs: 2, lr: 0.01, patience: 5}", "train.max_val_batches=1", val_n=5)
    assert [c["ids"] for c in run.model.calls if not c["training"]] == [["s100", "s101"]] * 2


def test_the_loaders_use_the_recipes_data_workers(harness, monkeypatch):
    workers = []

    class Recording(torch.utils.data.DataLoader):  # records the setting, then loads in this process
        def __init__(self, *args, **kwargs):
            workers.append(kwargs["num_workers"])
            super().__init__(*args, **{**kwargs, "num_workers": 0})

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    harness("{name: s1, contexts: [image], epochs: 1, lr: 0.01}", "data.num_workers=3")
    assert workers == [3, 3]


def test_the_schedule_advances_once_per_process_per_optimizer_step():
    """accelerate steps a prepared scheduler once per process; its lengths are counted in those units."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = loop.cosine_schedule(optimizer, 2, 6, num_processes=3)
    rates = []
    for _ in range(6):
        for _ in range(3):
            optimizer.step()
            scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert rates == pytest.approx([cosine_with_warmup(step, 2, 6) for step in range(1, 7)])


def test_result_from_meta_reads_a_finished_stage_with_defaults_for_older_metas():
    meta = {"best_val_loss": 0.25, "epoch": 3, "step": 12, "samples_per_second": 4.5, "stopped": "max epochs",
            "history": [{"step": 12}]}
    assert loop._result_from_meta("s2", meta) == StageResult("s2", 0.25, 3, 12, 4.5, "max epochs", [{"step": 12}])
    assert loop._result_from_meta("s3", {"best_val_loss": 1.5}) == StageResult("s3", 1.5, 0, 0, 0.0, "", [])


@pytest.mark.parametrize("batches, processes, accumulation, steps", [
    (16, 1, 1, 16), (16, 2, 1, 8), (7, 2, 1, 4), (16, 2, 3, 3), (5, 4, 2, 1), (1, 8, 4, 1)])
def test_an_epoch_makes_one_optimizer_step_per_accumulated_batch_of_each_process(batches, processes, accumulation, steps):
    """accelerate deals whole batches to the processes (the last ones padded) and steps at the loader's end."""
    assert loop.optimizer_steps_per_epoch(batches, processes, accumulation) == steps
