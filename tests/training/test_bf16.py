"""The shipped recipes' precision (bf16 LLM weights, bf16 autocast) through train and generate, on the tiny models.

At real size this path only runs on a GPU (see ``tests/test_realshaped.py``
for why the real-shaped CPU test is float32); here the same code runs on CPU.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from s2d_align.data.manifest import image_path, read_manifest
from s2d_align.models.pretrained import load_pretrained
from s2d_align.training.loop import train


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state, fixed by the first Accelerator (float32 in the other tests)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_weights_and_autocast_train_every_stage_and_generate(tiny_world, tmp_path, fresh_accelerate_state):
    from s2d_align import ReportGenerator

    config = tiny_world.config("model.llm.dtype=bfloat16", "train.mixed_precision=bf16")
    out = tmp_path / "run"
    results = train(config, out)
    assert [r.name for r in results] == ["s1", "s2", "s3"]
    assert all(math.isfinite(r.best_val_loss) for r in results)
    for stage in ("s1", "s2", "s3"):
        assert json.loads((out / "checkpoints" / stage / "meta.json").read_text())["complete"] is True
    connector = load_file(str(out / "checkpoints" / "s3" / "connector.safetensors"))
    assert {t.dtype for t in connector.values()} == {torch.float32}  # trained parameters stay float32 under autocast
    built, _, _ = load_pretrained(out / "checkpoints" / "s3")
    assert built.model.llm.get_base_model().dtype == torch.bfloat16
    images = [image_path(tiny_world.manifest, s.images[0]) for s in read_manifest(tiny_world.manifest) if s.split == "test"]
    reports = ReportGenerator.from_pretrained(out / "checkpoints" / "s3").batch(images)
    assert len(reports) == len(images) and all(isinstance(r.text, str) for r in reports)
