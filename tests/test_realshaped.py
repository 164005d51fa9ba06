"""The shipped MIMIC-CXR recipe on real-shaped base models, through the real command line.

Random Rad-DINO (ViT-B/14, 518 px, BitImageProcessor), CXR-BERT-specialized
(hub layout, ``auto_map`` to its custom classes, old remote code) and
Vicuna-7B v1.5 (sentencepiece tokenizer only, fp16 weights), from
:mod:`s2d_align.models.standins`, every one at 2 layers: each layer and every
interface has the real shape, and depth is the one thing cut so that CPU can
run it. Only model paths, the manifest and batch/epoch sizes are overridden:
S1 -> S2 -> S3 in bf16 on CPU, then ``generate`` from the images alone. No
remote code runs (no ``--trust-remote-code``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import write_synthetic_manifest

RECIPE = "configs/mimic_cxr/s2d_align.yaml"


@pytest.fixture(scope="module")
def shallow_standins(tmp_path_factory):
    from s2d_align.models.standins import build_standins

    return build_standins(tmp_path_factory.mktemp("standins_2_layers"), llm_layers=2, vision_layers=2, text_layers=2)


def run(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "s2d_align.cli", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise AssertionError(f"s2d-align {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def test_mimic_recipe_trains_and_generates_on_real_shaped_models(shallow_standins, tmp_path):
    # 3 patients: p0, p1 train (4 studies), p2 val (2 studies, which generate reads as its split)
    manifest = write_synthetic_manifest(tmp_path / "data", patients=3)
    out = tmp_path / "run"
    start = time.perf_counter()
    trained = run(
        "train", "--config", RECIPE, "--out", str(out),
        f"model.vision.name_or_path={shallow_standins['vision']}",
        f"model.text.name_or_path={shallow_standins['text']}",
        f"model.llm.name_or_path={shallow_standins['llm']}",
        f"data.manifest={manifest}", "data.num_workers=0",
        "train.batch_size=2", "train.eval_batch_size=2", "train.grad_accum_steps=1",
        *(f"train.stages.{s}.{k}" for s in ("s1", "s2", "s3") for k in ("epochs=1", "warmup_steps=0")),
    )
    train_seconds = time.perf_counter() - start
    for stage in ("s1", "s2", "s3"):
        meta = json.loads((out / "checkpoints" / stage / "meta.json").read_text())
        assert meta["complete"] is True and meta["stage"] == stage
        assert f"stage {stage}: best val loss" in trained.stdout
    config = (out / "checkpoints" / "s3" / "config.yaml").read_text()
    assert "trust_remote_code" not in config and "mixed_precision: bf16" in config
    predictions = tmp_path / "p.jsonl"
    run("generate", "--checkpoint", str(out / "checkpoints" / "s3"), "--manifest", str(manifest),
        "--split", "val", "--output", str(predictions), "batch_size=2", "max_new_tokens=24")  # the recipe's beams and min_new_tokens (20)
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p2_s0", "p2_s1"]
    assert all(isinstance(r["prediction"], str) for r in records)
    print(f"real-shaped MIMIC recipe: train {train_seconds:.0f} s, train+generate {time.perf_counter() - start:.0f} s")
