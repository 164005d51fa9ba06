"""The curriculum trainer on tiny models: checkpoints, resume, early stopping, bad input."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from s2d_align.data.manifest import read_manifest, write_manifest
from s2d_align.models.pretrained import load_pretrained
from s2d_align.training.checkpoint import read_meta
from s2d_align.training.loop import TrainingError, train
from tests.conftest import interrupted_after_evaluation


def _connector(directory):
    return load_file(str(directory / "connector.safetensors"))


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = tiny_world.config("train.stages.s1.epochs=2")
    return config, out, train(config, out)


def test_every_stage_writes_a_complete_checkpoint(trained):
    config, out, results = trained
    assert [r.name for r in results] == ["s1", "s2", "s3"]
    for name in ("s1", "s2", "s3"):
        directory = out / "checkpoints" / name
        meta = read_meta(directory)
        assert meta["complete"] is True and meta["stage"] == name
        assert {"torch", "transformers", "peft", "accelerate", "s2d_align"} <= set(meta["versions"])
        assert (directory / "lora" / "adapter_model.safetensors").is_file()
        assert (directory / "lora" / "adapter_config.json").is_file()
        assert not (directory / "last").exists()
        assert (directory / "config.yaml").read_text() == (out / "config.yaml").read_text()
    assert len(results[0].history) == 2  # one validation per epoch


def test_stage_one_leaves_the_llm_alone_and_stage_two_moves_lora(trained):
    _, out, _ = trained
    from peft import load_peft_weights

    s1 = load_peft_weights(str(out / "checkpoints" / "s1" / "lora"))
    s2 = load_peft_weights(str(out / "checkpoints" / "s2" / "lora"))
    assert all(v.abs().sum() == 0 for k, v in s1.items() if "lora_B" in k)
    assert any(v.abs().sum() > 0 for k, v in s2.items() if "lora_B" in k)
    c1, c3 = _connector(out / "checkpoints" / "s1"), _connector(out / "checkpoints" / "s3")
    untrained_then = [k for k in c1 if k.startswith("adapters.key_phrases")]
    assert untrained_then and all(not torch.equal(c1[k], c3[k]) for k in untrained_then)
    # The shared memory keeps training through every stage.
    assert not torch.equal(c1["memory"], _connector(out / "checkpoints" / "s2")["memory"])


def test_checkpoint_round_trip_reproduces_the_model(trained, tiny_world):
    _, out, _ = trained
    built, config, info = load_pretrained(out / "checkpoints" / "s3", text_encoder=True)
    assert info["stage"] == "s3" and info["kind"] == "checkpoint"
    state = built.model.connector.state_dict()
    for key, value in _connector(out / "checkpoints" / "s3").items():
        assert torch.equal(state[key], value)
    from peft import get_peft_model_state_dict, load_peft_weights

    saved = load_peft_weights(str(out / "checkpoints" / "s3" / "lora"))
    live = get_peft_model_state_dict(built.model.llm)
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)


def test_a_finished_run_is_not_retrained_nor_its_reports_counted_again(trained, capsys):
    config, out, results = trained
    before = _connector(out / "checkpoints" / "s3")
    assert (out / "report_tokens.json").is_file()
    capsys.readouterr()
    again = train(config, out)
    # the tiny world's 16 training studies (8 patients x 2)
    assert "report tokens: 16 training reports; 0 distinct texts counted now, the rest remembered (report_tokens.json)" \
        in capsys.readouterr().out
    assert [r.best_val_loss for r in again] == [r.best_val_loss for r in results]
    assert all(torch.equal(before[k], v) for k, v in _connector(out / "checkpoints" / "s3").items())


def test_another_config_cannot_reuse_the_run_folder(trained, tiny_world):
    _, out, _ = trained
    with pytest.raises(TrainingError, match="different config"):
        train(tiny_world.config("train.seed=7"), out)


def test_a_run_folder_of_an_older_version_with_remote_code_keys_still_resumes(trained, tmp_path):
    import yaml

    config, out, results = trained
    older = tmp_path / "older"
    shutil.copytree(out, older)
    raw = yaml.safe_load((older / "config.yaml").read_text())
    raw["model"]["vision"]["trust_remote_code"] = True  # what runs of earlier versions wrote
    raw["model"]["text"]["trust_remote_code"] = True
    (older / "config.yaml").write_text(yaml.safe_dump(raw))
    again = train(config, older)  # the keys are dropped, never obeyed; the finished stages are kept
    assert [r.best_val_loss for r in again] == [r.best_val_loss for r in results]


@pytest.mark.parametrize("where", ["epoch end", "mid-epoch"])
def test_interrupted_training_resumes_to_the_same_weights(tiny_world, tmp_path, monkeypatch, where):
    # Dropout on, so that the random state must resume exactly too.
    config = tiny_world.config(
        "train.stages=[{name: s1, contexts: [image], epochs: 3, lr: 0.001, patience: 5}]",
        "model.connector.dropout=0.2", "model.lora.dropout=0.2",
        "train.eval_every=" + ("0" if where == "epoch end" else "3"),
    )
    train(config, tmp_path / "straight")

    with interrupted_after_evaluation(monkeypatch, 2):
        train(config, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "s1" / "last").is_dir()
    assert read_meta(tmp_path / "resumed" / "checkpoints" / "s1")["complete"] is False
    train(config, tmp_path / "resumed")
    a = _connector(tmp_path / "straight" / "checkpoints" / "s1")
    b = _connector(tmp_path / "resumed" / "checkpoints" / "s1")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    history = read_meta(tmp_path / "resumed" / "checkpoints" / "s1")["history"]
    # 16 training studies, batches of 4; the crash came after the second evaluation
    assert [h["step"] for h in history] == ([4, 8, 12] if where == "epoch end" else [3, 6, 9, 12])


def test_patience_stops_a_stage(tiny_world, tmp_path):
    config = tiny_world.config(
        "train.stages=[{name: s1, contexts: [image], epochs: 6, lr: 1.0e-12, patience: 1}]", "train.eval_every=1"
    )
    (result,) = train(config, tmp_path / "run")
    assert result.stopped == "no improvement in 1 evaluations"
    assert result.steps == 2  # lr 1e-12 moves no float32 weight: the second evaluation cannot improve on the first
    assert result.epochs_run == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_world, tmp_path, monkeypatch):
    from s2d_align.models.model import S2DAlign

    config = tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 3, lr: 0.001}]")
    real = S2DAlign.forward
    calls = {"n": 0}

    def poisoned(self, batch, context):
        calls["n"] += 1
        sums, counts = real(self, batch, context)
        return (sums * float("nan"), counts) if calls["n"] == 6 else (sums, counts)

    monkeypatch.setattr(S2DAlign, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"stage s1 stopped at step 4: the training loss is nan; the last good checkpoint \(step 4,"):
        train(config, tmp_path / "run")
    meta = read_meta(tmp_path / "run" / "checkpoints" / "s1")
    # Forward calls 1-4 train epoch 1, call 5 validates, call 6 (epoch 2's first batch) is poisoned.
    assert meta["step"] == 4 and meta["complete"] and meta["stopped"] == "non-finite training loss at step 4"
    # As the message says, running train again on the folder goes on from the kept checkpoint.
    monkeypatch.setattr(S2DAlign, "forward", real)
    (result,) = train(config, tmp_path / "run")
    assert (result.steps, result.stopped) == (4, "non-finite training loss at step 4")


def test_non_finite_validation_loss_stops_the_stage(tiny_world, tmp_path, monkeypatch):
    from s2d_align.training import loop

    config = tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 2, lr: 0.001}]")
    monkeypatch.setattr(loop, "validation_loss", lambda *args, **kwargs: float("nan"))
    with pytest.raises(TrainingError, match="the validation loss is nan; no checkpoint of this stage was good yet"):
        train(config, tmp_path / "run")


def test_eval_every_counts_steps_and_the_stage_ends_with_an_evaluation(tiny_world, tmp_path):
    config = tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 2, lr: 0.001, patience: 9}]",
                               "train.eval_every=3")
    (result,) = train(config, tmp_path / "run")
    # 4 optimizer steps per epoch: every 3rd step, and the last one; not at the first epoch's end.
    assert [h["step"] for h in result.history] == [3, 6, 8]
    assert result.epochs_run == 2


def test_unreadable_images_are_reported_before_training(tiny_world, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_world.root / "images", root / "images")
    studies = read_manifest(tiny_world.manifest)
    (root / "images" / "p0_s1.png").unlink()
    (root / "images" / "p9_s0.png").write_bytes(b"not a png")
    write_manifest(root / "manifest.jsonl", studies)
    config = tiny_world.config(f"data.manifest={root / 'manifest.jsonl'}")
    with pytest.raises(TrainingError) as caught:
        train(config, tmp_path / "run")
    message = str(caught.value)
    assert "2 image(s)" in message and "p0_s1: " in message and "missing file" in message
    assert "p9_s0: " in message and "unreadable image" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_training_references_must_be_training_studies(tiny_world, tmp_path):
    studies = read_manifest(tiny_world.manifest)
    test_id = next(s.id for s in studies if s.split == "test")
    import dataclasses

    studies[1] = dataclasses.replace(studies[1], reference_id=test_id)
    write_manifest(tmp_path / "m.jsonl", studies)
    with pytest.raises(TrainingError, match="training studies reference non-training studies"):
        train(tiny_world.config(f"data.manifest={tmp_path / 'm.jsonl'}"), tmp_path / "run")
