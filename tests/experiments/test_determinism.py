"""Everything built from a seed is the same file, byte for byte, in two processes.

Two processes differ in their hash seed (``PYTHONHASHSEED`` is set apart here
on purpose): the demo's text tokenizer once changed size between runs that
way. Each process draws a synthetic manifest, builds the tiny base models,
trains all three stages, generates the test reports and evaluates them; every
file is then compared, meta files with their timing fields removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from s2d_align.models.tiny import wordpiece_vocabulary

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {"samples_per_second", "seconds", "saved_at"}

SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import TEST_SIZES, TinyWorld, write_synthetic_manifest
from s2d_align.models.tiny import build_tiny_models, TinySizes
from s2d_align.training.loop import train
from s2d_align.inference.generation import generate_file
from s2d_align.evaluation.report import evaluate_records
import dataclasses
root = Path(sys.argv[1])
manifest = write_synthetic_manifest(root)
sizes = dataclasses.replace(TEST_SIZES, llm_pretrain_steps=3, llm_pretrain_batch=4)
models = build_tiny_models(root / "base_models", manifest, seed=0, sizes=sizes)
world = TinyWorld(root, manifest, models)
config = world.config("model.lora.dropout=0.1", "model.connector.dropout=0.1")
train(config, root / "run")
generate_file(root / "run" / "checkpoints" / "s3", manifest, "test", root / "run" / "predictions.jsonl")
records = [json.loads(l) for l in (root / "run" / "predictions.jsonl").read_text().splitlines()]
(root / "run" / "metrics.json").write_text(json.dumps(evaluate_records(records, clean="none", metrics="bleu,rouge_l,ce", resamples=50), indent=2))
"""


def _strip_timings(value):
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def _start(root: Path, hash_seed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    script = SCRIPT.replace("{tests!r}", repr(str(ROOT / "tests")))
    return subprocess.Popen([sys.executable, "-c", script, str(root)], env=env, cwd=root.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _files(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == "image_checks.json":  # a cache of the images' sizes and mtimes, not built from the seed
            continue
        data = path.read_bytes().replace(str(root).encode(), b"<ROOT>")  # configs name their own folder
        if path.name == "meta.json":
            data = json.dumps(_strip_timings(json.loads(data)), sort_keys=True).encode()
        files[str(path.relative_to(root))] = data
    return files


def test_two_processes_build_train_and_predict_byte_identical_files(tmp_path):
    runs = {name: _start(tmp_path / name, seed) for name, seed in (("a", "1"), ("b", "2"))}  # side by side
    for run in runs.values():
        output = run.communicate(timeout=600)[0].decode(errors="replace")
        assert run.returncode == 0, output[-3000:]
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    for wanted in ("base_models/text/tokenizer.json", "base_models/llm/model.safetensors",
                   "run/checkpoints/s3/connector.safetensors", "run/predictions.jsonl", "run/metrics.json"):
        assert wanted in first
    # train writes its curves: one validation per stage (one epoch each), 4 steps each (16 studies, batch 4)
    rows = first["run/curves.csv"].decode().splitlines()
    assert rows[0] == "stage,step,run_step,epoch,train_loss,val_loss"
    assert [tuple(r.split(",")[:3]) for r in rows[1:]] == [("s1", "4", "4"), ("s2", "4", "8"), ("s3", "4", "12")]
    assert first["run/curves.png"][:4] == b"\x89PNG"
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_wordpiece_vocabulary_is_sorted_counts():
    words = ["effusion", "small", "effusion", "left", "small", "effusion", "a"]
    vocab = wordpiece_vocabulary(words, 22, ["[PAD]", "[UNK]"])
    # specials and 11 characters alone and continued already pass 22 entries: no whole word fits
    assert list(vocab)[:3] == ["[PAD]", "[UNK]", "a"]
    vocab = wordpiece_vocabulary(words, 40, ["[PAD]", "[UNK]"])
    chars = sorted(set("effusionsmallleft"))
    assert list(vocab) == ["[PAD]", "[UNK]", *chars, *(f"##{c}" for c in chars), "effusion", "small", "left"]
    assert list(vocab.values()) == list(range(len(vocab)))
