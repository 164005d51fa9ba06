"""Stage checkpoints and resume state: what each file holds, what is invalidated first, round-trips.

A tiny stand-in for the trained parts (a connector and a LoRA-wrapped two-layer Llama) keeps these
at unit-test speed; the trainer's own resume is pinned end to end in ``test_loop.py``.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from s2d_align.config import load_config
from s2d_align.training import checkpoint
from s2d_align.training.checkpoint import (
    CONNECTOR_FILE,
    LAST_DIR,
    LORA_DIR,
    META_FILE,
    STATE_FILE,
    begin_resume_state,
    drop_resume_state,
    load_resume_state,
    save_checkpoint,
    save_resume_state,
    versions,
)
from tests.conftest import trained_state


def _model(seed: int):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=16))
    llm = get_peft_model(llm, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False))
    return SimpleNamespace(connector=nn.Linear(3, 4), llm=llm)


def _trainable(model):
    return [model.connector.weight, *(p for n, p in model.llm.named_parameters() if "lora_" in n)]


def _optimizer(model):
    optimizer = torch.optim.AdamW(_trainable(model), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return optimizer, scheduler


def test_a_stage_checkpoint_holds_weights_config_and_meta_written_last(tmp_path):
    config, model, folder = load_config("demo"), _model(0), tmp_path / "run" / "checkpoints" / "s1"
    save_checkpoint(folder, model, config, {"stage": "s1", "step": 7, "complete": True})
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONNECTOR_FILE, LORA_DIR, "config.yaml", META_FILE])
    meta = json.loads((folder / META_FILE).read_text())
    assert {k: meta[k] for k in ("stage", "step", "complete")} == {"stage": "s1", "step": 7, "complete": True}
    assert meta["versions"] == versions() and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", meta["saved_at"])
    assert load_config(folder / "config.yaml", saved=True) == config
    other = _model(1)
    checkpoint.load_weights(folder, other)
    for key, value in trained_state(model).items():
        torch.testing.assert_close(trained_state(other)[key], value, rtol=0, atol=0)


def test_a_checkpoint_being_replaced_is_invalid_until_its_new_meta_lands(tmp_path, monkeypatch):
    config, folder = load_config("demo"), tmp_path / "s1"
    save_checkpoint(folder, _model(0), config, {"stage": "s1", "complete": True})

    def killed(directory, model):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_weights", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, _model(1), config, {"stage": "s1", "complete": True})
    assert not (folder / META_FILE).exists() and checkpoint.read_meta(folder) is None


def test_resume_state_round_trips_weights_optimizer_scheduler_and_counters(tmp_path):
    model = _model(0)
    optimizer, scheduler = _optimizer(model)
    for _ in range(2):  # moments and a decayed learning rate worth restoring
        loss = model.connector(torch.ones(1, 3)).sum() + sum(p.sum() for p in _trainable(model)[1:])
        loss.backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    begin_resume_state(tmp_path)
    save_resume_state(tmp_path, model, optimizer, scheduler, {"step": 2, "epoch": 1})
    assert sorted(p.name for p in (tmp_path / LAST_DIR).iterdir()) == sorted([CONNECTOR_FILE, LORA_DIR, STATE_FILE,
                                                                              META_FILE])
    other = _model(1)
    other_optimizer, other_scheduler = _optimizer(other)
    state = load_resume_state(tmp_path, other, other_optimizer, other_scheduler)
    assert {k: state[k] for k in ("step", "epoch")} == {"step": 2, "epoch": 1}
    for key, value in trained_state(model).items():
        torch.testing.assert_close(trained_state(other)[key], value, rtol=0, atol=0)
    assert other_scheduler.state_dict() == scheduler.state_dict() and other_scheduler.get_last_lr() == [0.025]
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"] and saved["state"].keys() == loaded["state"].keys()
    for index, moments in saved["state"].items():
        for name, value in moments.items():
            torch.testing.assert_close(loaded["state"][index][name], value, rtol=0, atol=0)


def test_resume_state_is_absent_until_written_and_after_it_is_begun_or_dropped(tmp_path):
    model = _model(0)
    optimizer, scheduler = _optimizer(model)
    assert load_resume_state(tmp_path, model, optimizer, scheduler) is None
    begin_resume_state(tmp_path / "run" / "s1")  # makes the folders, writes nothing
    assert (tmp_path / "run" / "s1" / LAST_DIR).is_dir() and not any((tmp_path / "run" / "s1" / LAST_DIR).iterdir())
    begin_resume_state(tmp_path)
    save_resume_state(tmp_path, model, optimizer, scheduler, {"step": 1})
    begin_resume_state(tmp_path)  # the old parts stay, but they no longer count
    assert (tmp_path / LAST_DIR / CONNECTOR_FILE).is_file()
    assert load_resume_state(tmp_path, model, optimizer, scheduler) is None
    drop_resume_state(tmp_path)
    assert not (tmp_path / LAST_DIR).exists()
    drop_resume_state(tmp_path)  # nothing to drop: no error


def test_a_pickled_object_in_a_received_trainer_state_does_not_run(tmp_path):
    """``last/trainer_state.pt`` from someone else's run folder is read with ``weights_only=True``."""
    import pickle

    model = _model(0)
    optimizer, scheduler = _optimizer(model)
    begin_resume_state(tmp_path)
    save_resume_state(tmp_path, model, optimizer, scheduler, {"step": 1})
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    torch.save({"optimizer": Payload(), "scheduler": {}}, tmp_path / LAST_DIR / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_resume_state(tmp_path, model, optimizer, scheduler)
    assert not marker.exists()
