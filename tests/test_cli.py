"""The real command line, end to end, on a very small phantom dataset (subprocesses, as a user runs it)."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def run(*args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-m", "s2d_align.cli", *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"s2d-align {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


SMALL = ("demo.llm_pretrain_steps=5", "train.stages.s1.epochs=1", "train.stages.s2.epochs=1",
         "train.stages.s3.epochs=1", "generate.num_beams=1", "generate.max_new_tokens=12")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = run("demo", "--out", str(out), "--studies", "40", *SMALL)
    return out, result


def test_demo_writes_every_artifact(demo_run):
    out, result = demo_run
    for path in ("manifest.jsonl", "prepare_report.json", "predictions.jsonl", "predictions_s1.jsonl", "metrics.json"):
        assert (out / path).is_file(), path
    for stage in ("s1", "s2", "s3"):
        assert json.loads((out / "checkpoints" / stage / "meta.json").read_text())["complete"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    headline = ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1"]
    assert all(isinstance(metrics[k], float) for k in headline)
    assert all(isinstance(metrics["s1"][k], float) for k in headline)
    demo = metrics["demo"]
    assert [s["name"] for s in demo["stages"]] == ["s1", "s2", "s3"]
    assert all(s["samples_per_second"] > 0 for s in demo["stages"])
    assert demo["peak_memory_mib"] > 0 and demo["test_studies"] == len(predictions_of(out))
    assert demo["seconds"]["generate_s3_reports_per_second"] > 0
    assert "after S1" in result.stdout and "after S3" in result.stdout and "CE-F1" in result.stdout
    test_ids = [json.loads(l)["id"] for l in (out / "manifest.jsonl").read_text().splitlines() if '"split": "test"' in l]
    assert [p["id"] for p in predictions_of(out)] == test_ids


def predictions_of(out):
    return [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]


def test_prepare_generate_evaluate_commands(demo_run, tmp_path):
    out, _ = demo_run
    run("prepare", "phantom", "--out", str(tmp_path / "phantom"), "--studies", "12", "--seed", "3")
    assert len((tmp_path / "phantom" / "manifest.jsonl").read_text().splitlines()) == 12
    predictions = tmp_path / "p.jsonl"
    run("generate", "--checkpoint", str(out / "checkpoints" / "s1"), "--manifest", str(out / "manifest.jsonl"),
        "--split", "val", "--output", str(predictions), "num_beams=1", "max_new_tokens=5")
    records = [json.loads(l) for l in predictions.read_text().splitlines()]
    assert records and all(set(r) == {"id", "reference", "prediction"} for r in records)
    result = run("evaluate", "--predictions", str(predictions), "--output", str(tmp_path / "m.json"), "--clean", "mimic_cxr")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0.0 <= metrics["ce_f1"] <= 1.0 and "B@4" in result.stdout


def test_errors_name_the_problem(tmp_path):
    result = run("train", "--config", "demo", "--out", str(tmp_path / "r"), "train.batch_sise=3", check=False)
    assert result.returncode == 2 and "unknown key train.'batch_sise'" in result.stderr
    result = run("generate", "--checkpoint", str(tmp_path), "--manifest", "m.jsonl", "--output", "p.jsonl", check=False)
    assert result.returncode == 2 and "the folder is empty" in result.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.yaml").write_text("train:\n  seed: 99\n")
    result = run("train", "--config", "demo", "--out", str(tmp_path / "taken"), check=False)
    assert result.returncode == 2 and "holds a run with a different config" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_with_another_phantom_rebuilds_what_depends_on_it(demo_run, tmp_path):
    out = tmp_path / "demo"
    shutil.copytree(demo_run[0], out)
    result = run("demo", "--out", str(out), "--studies", "36", *SMALL)
    assert "removing what was built from it" in result.stdout
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 36
    assert json.loads((out / "metrics.json").read_text())["demo"]["test_studies"] == len(predictions_of(out))
