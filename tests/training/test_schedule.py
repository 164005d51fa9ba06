"""The learning-rate schedule has the same shape on one process and on several."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = """
import json, math, sys
import torch
from accelerate import Accelerator
from s2d_align.training.loop import cosine_schedule

accelerator = Accelerator(cpu=True)
model = torch.nn.Linear(2, 1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
loader = torch.utils.data.DataLoader(list(range(64)), batch_size=4)
total = math.ceil(len(loader) / accelerator.num_processes)  # optimizer steps in one epoch, as the trainer counts
scheduler = cosine_schedule(optimizer, 2, total, accelerator.num_processes)
model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
rates = []
for batch in loader:
    accelerator.backward(model(batch.float()[:, None].repeat(1, 2)).mean())
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    rates.append(scheduler.get_last_lr()[0])
if accelerator.is_main_process:
    with open(sys.argv[1], "w") as handle:
        json.dump(rates, handle)
"""


def expected(total: int, warmup: int = 2) -> list[float]:
    """transformers' cosine-with-warm-up after each of ``total`` optimizer steps."""
    out = []
    for step in range(1, total + 1):
        if step < warmup:
            out.append(step / warmup)
        else:
            out.append(max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))))
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_schedule_spans_the_stage_on_any_number_of_processes(tmp_path, processes):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    output = tmp_path / "rates.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(script), str(output)]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    rates = json.loads(output.read_text())
    assert len(rates) == 16 // processes
    assert rates == pytest.approx(expected(16 // processes))
