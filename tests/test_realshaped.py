"""The shipped MIMIC-CXR recipe on real-shaped base models, through the real command line.

Random Rad-DINO (ViT-B/14, 518 px, BitImageProcessor), CXR-BERT-specialized
(hub layout, ``auto_map`` to its custom classes, old remote code) and
Vicuna-7B v1.5 (sentencepiece tokenizer only, fp16 weights), from
:mod:`s2d_align.models.standins`, every one at 2 layers: each layer and every
interface has the real shape, and depth is the one thing cut so that CPU can
run it. Only model paths, the manifest, batch/epoch sizes and the precision
are overridden: S1 -> S2 -> S3, then ``generate`` from the images alone. No
remote code runs (no ``--trust-remote-code``).

The precision is float32, not the recipe's bf16: on a CPU without AVX-512
BF16 (this project's 2-core AMD EPYC, AVX2 only) PyTorch's bf16 matmul runs
at 0.3 GFLOP/s against 70 GFLOP/s in float32 (a 400 x 4096 by 4096 x 4096
product, measured side by side), so one bf16 step of this model takes about
an hour. The bf16 code path itself (bf16 LLM weights, bf16 autocast, the
connector's output cast to the LLM's dtype) is covered on the tiny models by
``tests/training/test_bf16.py``; the recipe's bf16 at this size is for a GPU
(``benchmarks/gpu_check.sh``).
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
    manifest = write_synthetic_manifest(tmp_path / "data", patients=4)  # 4 train, 2 val, 2 test studies
    out = tmp_path / "run"
    start = time.perf_counter()
    trained = run(
        "train", "--config", RECIPE, "--out", str(out),
        f"model.vision.name_or_path={shallow_standins['vision']}",
        f"model.text.name_or_path={shallow_standins['text']}",
        f"model.llm.name_or_path={shallow_standins['llm']}",
        f"data.manifest={manifest}", "data.num_workers=0",
        "train.batch_size=4", "train.eval_batch_size=2", "train.grad_accum_steps=1",
        "model.llm.dtype=float32", "train.mixed_precision=no",
        *(f"train.stages.{s}.{k}" for s in ("s1", "s2", "s3") for k in ("epochs=1", "warmup_steps=0")),
    )
    train_seconds = time.perf_counter() - start
    for stage in ("s1", "s2", "s3"):
        meta = json.loads((out / "checkpoints" / stage / "meta.json").read_text())
        assert meta["complete"] is True and meta["stage"] == stage
        assert f"stage {stage}: best val loss" in trained.stdout
    config = (out / "checkpoints" / "s3" / "config.yaml").read_text()
    assert "trust_remote_code" not in config and "mixed_precision: 'no'" in config
    predictions = tmp_path / "p.jsonl"
    run("generate", "--checkpoint", str(out / "checkpoints" / "s3"), "--manifest", str(manifest),
        "--split", "test", "--output", str(predictions), "batch_size=2", "max_new_tokens=24")  # the recipe's beams and min_new_tokens (20)
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p3_s0", "p3_s1"]
    assert all(isinstance(r["prediction"], str) for r in records)
    print(f"real-shaped MIMIC recipe: train {train_seconds:.0f} s, train+generate {time.perf_counter() - start:.0f} s")
