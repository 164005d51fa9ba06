"""A failed start leaves the run folder as it found it; a folder of another config lists what differs."""

import dataclasses

import pytest

from s2d_align.config import ConfigError, replace, save_config
from s2d_align.training.loop import TrainingError, train


def _bad_starts(tiny_world, tmp_path):
    base = tiny_world.config()
    stage = dataclasses.replace(base.train.stages[0], contexts=("image+refrence",))
    return {
        "missing manifest": (replace(base, **{"data.manifest": str(tmp_path / "nowhere.jsonl")}), "no such manifest"),
        "bad model path": (replace(base, **{"model.llm.name_or_path": str(tmp_path / "no_llm")}),
                           r"model\.llm\.name_or_path .*looks like a local folder"),
        "batch_size=0": (replace(base, **{"train.batch_size": 0}), r"train\.batch_size must be at least 1, got 0"),
        "bad context": (replace(base, **{"train.stages": (stage, *base.train.stages[1:])}),
                        r"train\.stages\[0\]\.contexts\[0\] 'image\+refrence'.*did you mean 'reference'"),
    }


@pytest.mark.parametrize("case", ["missing manifest", "bad model path", "batch_size=0", "bad context"])
def test_a_failed_start_writes_nothing(tiny_world, tmp_path, case):
    config, message = _bad_starts(tiny_world, tmp_path)[case]
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for out in (fresh, existing):
        with pytest.raises((TrainingError, ConfigError, ValueError), match=message):
            train(config, out)
    assert not fresh.exists()
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_the_corrected_command_then_runs(tiny_world, tmp_path):
    out = tmp_path / "run"
    good = tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 1}]")
    with pytest.raises(ConfigError):
        train(replace(good, **{"train.batch_size": 0}), out)
    results = train(good, out)
    assert [r.name for r in results] == ["s1"]
    assert (out / "config.yaml").is_file()


def test_a_different_config_lists_the_keys_that_differ(tiny_world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_config(tiny_world.config(), out / "config.yaml")
    with pytest.raises(TrainingError) as caught:
        train(tiny_world.config("train.seed=7", "train.stages.s2.lr=0.5"), out)
    message = str(caught.value)
    assert "2 key(s) differ" in message
    assert "train.seed: 42 there, 7 now" in message
    assert "train.stages[1].lr: 5e-05 there, 0.5 now" in message
