"""The experiment grid: cells from the recipes, exact matched compute, a micro grid end to end, resume."""

from __future__ import annotations

import json
import math

import pytest

from s2d_align.cli import main
from s2d_align.experiments.grid import GridSettings, cell_config
from s2d_align.experiments.statistics import minimum_detectable_difference, seeds_needed

MICRO = ["--grid", "table3", "--cells", "s1_only_matched,s1_s2_s3", "--seeds", "2", "--studies", "20",
         "--epoch-scale", "0.2", "demo.llm_pretrain_steps=2", "train.batch_size=16", "train.eval_batch_size=16",
         "generate.max_new_tokens=8", "model.connector.num_memory=4", "model.connector.memory_dim=16",
         "model.connector.hidden_size=32", "model.connector.num_heads=2"]


def test_cells_take_the_recipes_stages_and_connectors(tmp_path):
    settings = GridSettings(epoch_scale=0.4)
    full = cell_config("s1_s2_s3", 0, tmp_path, settings)
    assert [(s.name, s.contexts, s.lora, s.epochs) for s in full.train.stages] == [
        ("s1", ("image",), False, 2), ("s2", ("image+reference",), True, 1), ("s3", ("image+reference+key_phrases",), True, 1)]
    assert all(s.patience > s.epochs for s in full.train.stages)  # no early stopping: steps fixed in advance
    assert cell_config("mlp_qformer", 0, tmp_path, settings).model.connector.kind == "mlp_qformer"
    assert [s.name for s in cell_config("s1_s3_s2", 0, tmp_path, settings).train.stages] == ["s1", "s3", "s2"]
    assert cell_config("joint", 0, tmp_path, settings).train.stages[0].epochs == 3  # 8 x 0.4
    assert cell_config("s1_only", 1, tmp_path, settings).train.seed == 1


@pytest.mark.parametrize("scale", [0.2, 0.4, 1.0])
def test_matched_cells_train_as_many_epochs_as_the_full_method(tmp_path, scale):
    settings = GridSettings(epoch_scale=scale)
    full = sum(s.epochs for s in cell_config("s1_s2_s3", 0, tmp_path, settings).train.stages)
    for name in ("s1_only_matched", "joint_matched"):
        (stage,) = cell_config(name, 0, tmp_path, settings).train.stages
        assert stage.epochs == full and stage.patience > full
    assert cell_config("joint_matched", 0, tmp_path, settings).train.stages[0].contexts == (
        "image", "image+reference", "image+reference+key_phrases")


def test_power_calculation():
    # (1.959964 + 0.841621) * 0.01 * sqrt(2 / 3) = 0.022875
    assert minimum_detectable_difference(0.01, 3) == pytest.approx(0.0228747, abs=1e-6)
    assert seeds_needed(0.01, 0.01) == math.ceil(2 * (2.801585) ** 2)  # 16


def test_micro_grid_end_to_end_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    assert main(["experiment", "--out", str(out), *MICRO]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["cells"]) == {"s1_only_matched", "s1_s2_s3"}
    for cell in results["cells"].values():
        assert set(cell["per_seed"]) == {"0", "1"}
        assert {"ce_f1", "bleu4", "rouge_l", "per_observation_f1"} <= set(cell["per_seed"]["0"])
        for metric in ("ce_f1", "bleu4", "rouge_l"):
            summary = cell["summary"][metric]
            assert set(summary) == {"mean", "sd", "ci95"} and summary["ci95"][0] <= summary["ci95"][1]
    # the full method trains 1 + 1 + 1 epochs of ceil(training studies / 16) steps, and so does the matched cell
    from s2d_align.data.manifest import read_manifest

    train_studies = sum(s.split == "train" for s in read_manifest(out / "phantom" / "manifest.jsonl"))
    assert results["cells"]["s1_s2_s3"]["steps"] == 3 * math.ceil(train_studies / 16)
    assert [s["steps"] for s in results["cells"]["s1_s2_s3"]["stages"]] == [math.ceil(train_studies / 16)] * 3
    assert results["cells"]["s1_only_matched"]["steps"] == results["cells"]["s1_s2_s3"]["steps"]
    comparison = results["comparisons"]["s1_only_matched"]["ce_f1"]
    assert set(comparison) == {"difference", "ci95", "p"} and 0 < comparison["p"] <= 1
    assert results["power"]["mde"] is not None
    assert {p.name for p in (out / "plots").iterdir()} == {"validation_loss.png", "ce_f1.png", "per_observation_f1.png"}
    assert "equal compute" in (out / "results.md").read_text()

    # Rerun: every finished cell is skipped, nothing trains.
    import s2d_align.training.loop as loop

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(loop, "train", no_training)
    assert main(["experiment", "--out", str(out), *MICRO]) == 0
    assert json.loads((out / "results.json").read_text())["cells"] == results["cells"]

    # An interrupted cell (no metrics.json yet) is the only one that runs again, through train's resume.
    monkeypatch.undo()
    (out / "cells" / "s1_s2_s3" / "seed_1" / "metrics.json").unlink()
    ran = []
    real = loop.train
    monkeypatch.setattr(loop, "train", lambda config, directory: ran.append(directory.name) or real(config, directory))
    assert main(["experiment", "--out", str(out), *MICRO]) == 0
    assert ran == ["seed_1"]
    assert json.loads((out / "results.json").read_text())["cells"] == results["cells"]
