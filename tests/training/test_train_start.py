"""What ``train`` does around its stages, with the stage loop itself replaced by a recorder.

Start-up checks, the messages it prints, the datasets and report lengths each
stage gets, finished stages skipped and the curves written: everything up to
``_run_stage`` runs for real on the tiny models.
"""

from __future__ import annotations

import dataclasses

import pytest

from s2d_align.data.manifest import read_manifest, write_manifest
from s2d_align.training import checkpoint as ckpt
from s2d_align.training import loop
from s2d_align.training.loop import StageResult, TrainingError, train

HISTORY = [{"step": 3, "epoch": 1, "train_loss": 0.7, "val_loss": 0.5}]


@pytest.fixture
def stages(monkeypatch):
    """``_run_stage`` replaced: records what each stage was given and returns a result without training."""
    calls = []

    def recording(accelerator, config, stage, model, datasets, collate, directory, report_tokens=None):
        calls.append({"accelerator": accelerator, "stage": stage, "model": model, "datasets": datasets,
                      "collate": collate, "directory": directory, "report_tokens": report_tokens})
        return StageResult(stage.name, 0.5, 1, 3, 2.0, "max epochs", HISTORY)

    monkeypatch.setattr(loop, "_run_stage", recording)
    return calls


def _rewritten(tiny_world, tmp_path, change) -> str:
    """The tiny manifest with ``change`` applied to each study (None drops it), in the tiny world's folder."""
    studies = [change(s) for s in read_manifest(tiny_world.manifest)]
    path = tiny_world.root / f"{tmp_path.name}.jsonl"
    write_manifest(path, [s for s in studies if s is not None])
    return f"data.manifest={path}"


def _llm_token_counts(tiny_world, texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_world.models["llm"])
    return [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]


def test_each_stage_gets_its_folder_datasets_collator_and_report_lengths(tiny_world, tmp_path, stages):
    config = tiny_world.config("data.max_key_phrases=3", "data.max_report_tokens=10", "train.seed=5",
                               "data.max_images=2")
    out = tmp_path / "run"
    results = train(config, out)
    assert results == [StageResult(n, 0.5, 1, 3, 2.0, "max epochs", HISTORY) for n in ("s1", "s2", "s3")]
    assert [c["directory"] for c in stages] == [out / "checkpoints" / n for n in ("s1", "s2", "s3")]
    assert [c["stage"] for c in stages] == list(config.train.stages)
    studies = read_manifest(tiny_world.manifest)
    train_studies = [s for s in studies if s.split == "train"]
    for call in stages:
        train_set, val_set = call["datasets"]
        assert [s.id for s in train_set.studies] == [s.id for s in train_studies]
        assert [s.id for s in val_set.studies] == [s.id for s in studies if s.split == "val"]
        for dataset in (train_set, val_set):
            assert (dataset.max_key_phrases, dataset.seed, dataset.max_images) == (3, 5, 2)
            assert dataset.manifest == tiny_world.manifest
            assert dataset.findings_by_id == {s.id: s.findings for s in studies}  # references may be any split's
        collate = call["collate"]
        assert (collate.max_report_tokens, collate.max_text_tokens) == (10, 32)
        assert collate.text_tokenizer is not None and collate.llm_tokenizer is not None
    # report lengths as the collator makes them: at most max_report_tokens - 1 tokens, plus EOS
    counts = _llm_token_counts(tiny_world, [s.findings for s in train_studies])
    assert max(counts) > 9
    assert stages[0]["report_tokens"] == {s.id: min(n, 9) + 1 for s, n in zip(train_studies, counts)}
    assert (out / "curves.csv").read_text().splitlines()[1:] == ["s1,3,3,1,0.7,0.5", "s2,3,6,1,0.7,0.5", "s3,3,9,1,0.7,0.5"]


def test_without_length_grouping_no_lengths_are_passed(tiny_world, tmp_path, stages):
    train(tiny_world.config("train.group_by_length=false", "train.stages=[{name: s1, contexts: [image]}]"),
          tmp_path / "run")
    assert [c["report_tokens"] for c in stages] == [None]


def test_reports_over_the_cap_are_counted_and_the_counting_is_remembered(tiny_world, tmp_path, stages, capsys):
    studies = [s for s in read_manifest(tiny_world.manifest) if s.split == "train"]
    counts = _llm_token_counts(tiny_world, [s.findings for s in studies])
    config = tiny_world.config("data.max_report_tokens=15", "train.stages=[{name: s1, contexts: [image]}]")
    out = tmp_path / "run"
    train(config, out)
    printed = capsys.readouterr().out
    distinct = len({s.findings for s in studies})
    assert f"report tokens: {len(studies)} training reports; {distinct} distinct texts counted now, the rest remembered" in printed
    over = sum(n > 14 for n in counts)  # a 15-token report is cut too: one slot is EOS's
    assert 0 < over < len(studies)
    assert (f"{over} of {len(studies)} training reports exceed data.max_report_tokens=15; each is cut at its last "
            "whole sentence that fits") in printed
    train(config, out)
    assert f"{len(studies)} training reports; 0 distinct texts counted now" in capsys.readouterr().out
    train(tiny_world.config("data.max_report_tokens=200", "train.stages=[{name: s1, contexts: [image]}]"),
          tmp_path / "roomy")
    assert "exceed data.max_report_tokens" not in capsys.readouterr().out


def test_a_finished_stage_is_loaded_not_run(tiny_world, tmp_path, stages, monkeypatch, capsys):
    out = tmp_path / "run"
    config = tiny_world.config("train.stages=[{name: s1, contexts: [image]}, {name: s2, contexts: [image+reference], lora: true}]")
    done = out / "checkpoints" / "s1"
    done.mkdir(parents=True)
    meta = {"stage": "s1", "epoch": 2, "step": 8, "val_loss": 0.25, "best_val_loss": 0.25, "complete": True,
            "stopped": "max epochs", "samples_per_second": 9.5, "history": HISTORY}
    ckpt.write_meta(done, meta)
    loaded = []
    monkeypatch.setattr(ckpt, "load_weights", lambda directory, model: loaded.append(directory))
    results = train(config, out)
    assert loaded == [done]
    assert [c["stage"].name for c in stages] == ["s2"]
    assert results[0] == StageResult("s1", 0.25, 2, 8, 9.5, "max epochs", HISTORY)
    assert "stage s1: already complete (best val loss 0.2500)" in capsys.readouterr().out


def test_an_unfinished_stage_folder_is_run(tiny_world, tmp_path, stages, monkeypatch):
    out = tmp_path / "run"
    ckpt.write_meta(out / "checkpoints" / "s1", {"stage": "s1", "step": 2, "best_val_loss": 0.3, "complete": False})
    train(tiny_world.config("train.stages=[{name: s1, contexts: [image]}]"), out)
    assert [c["stage"].name for c in stages] == ["s1"]


def test_training_needs_train_and_val_studies(tiny_world, tmp_path):
    no_val = _rewritten(tiny_world, tmp_path, lambda s: None if s.split == "val" else s)
    with pytest.raises(TrainingError, match=r"training needs train and val studies \(have 16 / 0\)$"):
        train(tiny_world.config(no_val), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    no_train = _rewritten(tiny_world, tmp_path, lambda s: None if s.split == "train" else s)
    with pytest.raises(TrainingError, match=r"\(have 0 / 4\)$"):
        train(tiny_world.config(no_train), tmp_path / "run")


def test_a_leaked_reference_lists_up_to_ten_training_studies(tiny_world, tmp_path):
    test_id = next(s.id for s in read_manifest(tiny_world.manifest) if s.split == "test")
    leaky = _rewritten(tiny_world, tmp_path,
                       lambda s: dataclasses.replace(s, reference_id=test_id) if s.split == "train" else s)
    with pytest.raises(TrainingError) as caught:
        train(tiny_world.config(leaky), tmp_path / "run")
    train_ids = [s.id for s in read_manifest(tiny_world.manifest) if s.split == "train"]
    assert str(caught.value) == f"{leaky.split('=', 1)[1]}: training studies reference non-training studies: {train_ids[:10]}"


def test_the_joint_ablation_lets_ddp_find_the_parameters_a_step_leaves_unused(tiny_world, tmp_path, stages):
    from accelerate.utils import DistributedDataParallelKwargs

    train(tiny_world.config("train.stages=[{name: joint, contexts: [image, image+reference]}]"), tmp_path / "a")
    train(tiny_world.config("train.stages=[{name: s1, contexts: [image]}]"), tmp_path / "b")
    handlers = [c["accelerator"].ddp_handler for c in stages]
    assert all(isinstance(h, DistributedDataParallelKwargs) for h in handlers)
    assert [h.find_unused_parameters for h in handlers] == [True, False]


def test_only_the_images_a_stage_reads_are_checked_and_each_problem_is_listed(tiny_world, tmp_path, stages, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_world.root / "images", root / "images")
    studies = read_manifest(tiny_world.manifest)
    write_manifest(root / "m.jsonl", [dataclasses.replace(s, images=(*s.images, f"images/gone_{s.id}.png")) for s in studies])
    manifest = f"data.manifest={root / 'm.jsonl'}"
    one_view = tiny_world.config(manifest, "train.stages=[{name: s1, contexts: [image]}]")
    for _ in range(2):
        train(one_view, tmp_path / "one-view")  # with max_images=1 the missing second views are never read
    printed = capsys.readouterr().out
    assert "image check (header): 20 images, 20 opened, 0 remembered" in printed  # train and val studies only
    assert "image check (header): 20 images, 0 opened, 20 remembered" in printed
    assert len(stages) == 2
    (root / "images" / "p0_s0.png").unlink()
    (root / "images" / "p9_s1.png").unlink()
    with pytest.raises(TrainingError) as caught:
        train(tiny_world.config(manifest, "data.max_images=2"), tmp_path / "run")
    lines = str(caught.value).splitlines()
    assert lines[0] == f"22 image(s) of {root / 'm.jsonl'} cannot be read; fix or remove these records before training:"
    assert len(lines) == 22 and lines[-1] == "  ... and 2 more"
    gone, first = root / "images" / "gone_p0_s0.png", root / "images" / "p0_s0.png"
    assert lines[1:3] == [f"  p0_s0: {gone} (missing file {gone})", f"  p0_s0: {first} (missing file {first})"]
    assert len(stages) == 2
    # a failed start writes no config and no checkpoint; it keeps only which images passed (see docs/scaling.md)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["image_checks.json"]


def test_train_runs_no_code_from_a_base_model_folder_unless_told(tiny_world, tmp_path, stages):
    import shutil

    from s2d_align.models.loading import ModelLoadError
    from tests.conftest import plant_remote_code

    folder = tmp_path / "llm"
    shutil.copytree(tiny_world.models["llm"], folder)
    marker = tmp_path / "ran"
    plant_remote_code(folder, marker, "Llama", "ForCausalLM", "AutoModelForCausalLM")
    with pytest.raises(ModelLoadError):
        train(tiny_world.config(f"model.llm.name_or_path={folder}"), tmp_path / "run")
    assert not marker.exists() and stages == []


def test_absolute_image_paths_train_only_when_the_recipe_allows_them(tiny_world, tmp_path, stages):
    studies = read_manifest(tiny_world.manifest)
    absolute = [dataclasses.replace(s, images=tuple(str(tiny_world.root / p) for p in s.images)) for s in studies]
    path = tmp_path / "absolute.jsonl"
    write_manifest(path, absolute)
    with pytest.raises(ValueError, match="absolute"):
        train(tiny_world.config(f"data.manifest={path}"), tmp_path / "refused")
    train(tiny_world.config(f"data.manifest={path}", "data.allow_absolute_paths=true",
                            "train.stages=[{name: s1, contexts: [image]}]"), tmp_path / "run")
    assert len(stages) == 1


def test_a_folder_of_another_config_lists_twenty_keys_and_counts_the_rest(tiny_world, tmp_path):
    from s2d_align.config import save_config

    out = tmp_path / "run"
    out.mkdir()
    save_config(tiny_world.config(), out / "config.yaml")
    changed = ["model.connector.num_memory=5", "model.connector.memory_dim=17", "model.connector.hidden_size=33",
               "model.connector.num_heads=1", "model.connector.dropout=0.3", "model.lora.r=5", "model.lora.alpha=9",
               "data.max_images=2", "data.max_report_tokens=40", "data.max_key_phrases=3", "data.num_workers=1",
               "train.seed=1", "train.batch_size=3", "train.eval_batch_size=3", "train.grad_accum_steps=2",
               "train.weight_decay=0.2", "train.max_grad_norm=2.0", "train.eval_every=5", "train.min_delta=0.1",
               "train.max_val_batches=2", "generate.num_beams=3", "generate.batch_size=2"]
    with pytest.raises(TrainingError) as caught:
        loop._check_run_folder(tiny_world.config(*changed), out)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{out} holds a run with a different config ({out / 'config.yaml'}); 22 key(s) differ:"
    assert len(lines) == 23 and lines[1] == "  model.lora.r: 4 there, 5 now"  # in the config's order
    assert lines[-2:] == ["  ... and 2 more", "use another --out, or the same recipe and overrides to resume"]
    with pytest.raises(TrainingError) as caught:
        loop._check_run_folder(tiny_world.config(*changed[:20]), out)
    assert "more" not in str(caught.value) and len(str(caught.value).splitlines()) == 22
