"""The shipped MIMIC-CXR recipe on real-shaped base models, through the real command line.

Random Rad-DINO (ViT-B/14, 518 px), CXR-BERT-specialized (hub layout, old
remote code) and Vicuna-7B v1.5 (2 layers, sentencepiece tokenizer only), from
:mod:`s2d_align.models.standins`. Only model paths, the manifest and
batch/epoch/step sizes are overridden: S1 -> S2 -> S3 in bf16 on CPU, then
``generate``. No remote code runs (no ``--trust-remote-code``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import write_synthetic_manifest

RECIPE = "configs/mimic_cxr/s2d_align.yaml"


def run(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "s2d_align.cli", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise AssertionError(f"s2d-align {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def test_mimic_recipe_trains_and_generates_on_real_shaped_models(standins, tmp_path):
    manifest = write_synthetic_manifest(tmp_path / "data", patients=4)  # 4 train, 2 val, 2 test studies
    out = tmp_path / "run"
    start = time.perf_counter()
    run(
        "train", "--config", RECIPE, "--out", str(out),
        f"model.vision.name_or_path={standins['vision']}",
        f"model.text.name_or_path={standins['text']}",
        f"model.llm.name_or_path={standins['llm']}",
        f"data.manifest={manifest}", "data.num_workers=0",
        "train.batch_size=2", "train.eval_batch_size=2", "train.grad_accum_steps=1",
        *(f"train.stages.{s}.{k}" for s in ("s1", "s2", "s3") for k in ("epochs=1", "warmup_steps=0")),
    )
    trained = time.perf_counter() - start
    for stage in ("s1", "s2", "s3"):
        meta = json.loads((out / "checkpoints" / stage / "meta.json").read_text())
        assert meta["complete"] is True
    config = (out / "checkpoints" / "s3" / "config.yaml").read_text()
    assert "trust_remote_code" not in config and "mixed_precision: bf16" in config
    predictions = tmp_path / "p.jsonl"
    run("generate", "--checkpoint", str(out / "checkpoints" / "s3"), "--manifest", str(manifest),
        "--split", "test", "--output", str(predictions), "batch_size=2")
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p3_s0", "p3_s1"]
    assert all(isinstance(r["prediction"], str) for r in records)
    print(f"real-shaped MIMIC recipe: train {trained:.0f} s, train+generate {time.perf_counter() - start:.0f} s")
