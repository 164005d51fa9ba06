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


SHARD_WORKER = """
import json, sys
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from s2d_align.training.sampler import LengthGroupedSampler

lengths = [int(x) for x in sys.argv[2].split(",")]
accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
sampler = LengthGroupedSampler(lengths, batch_size=4, num_processes=accelerator.num_processes, seed=11)
loader = torch.utils.data.DataLoader(list(range(len(lengths))), batch_size=4, sampler=sampler)
loader = accelerator.prepare(loader)
epochs = []
for epoch in range(2):
    loader.set_epoch(epoch)
    sampler.set_epoch(epoch)
    epochs.append([batch.tolist() for batch in loader])
with open(f"{sys.argv[1]}.{accelerator.process_index}", "w") as handle:
    json.dump(epochs, handle)
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_length_grouped_batches_are_dealt_whole_to_the_ranks(tmp_path, processes):
    """Each sample once per epoch across ranks; rank r gets global batches r, r+N, ... of the grouped order."""
    import torch

    from s2d_align.training.sampler import LengthGroupedSampler

    lengths = [(7 * i) % 61 + 3 for i in range(64)]
    script = tmp_path / "worker.py"
    script.write_text(SHARD_WORKER)
    output = tmp_path / "batches"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(script), str(output), ",".join(map(str, lengths))]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    ranks = [json.loads(Path(f"{output}.{r}").read_text()) for r in range(processes)]
    reference = LengthGroupedSampler(lengths, batch_size=4, num_processes=processes, seed=11)
    for epoch in range(2):
        reference.set_epoch(epoch)
        order = list(reference)
        batches = [order[i : i + 4] for i in range(0, 64, 4)]
        for rank in range(processes):
            assert ranks[rank][epoch] == batches[rank::processes]
        seen = sorted(i for rank in ranks for batch in rank[epoch] for i in batch)
        assert seen == list(range(64))
        # grouped: a batch spans far less of the length range than a random one would
        spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for rank in ranks for b in rank[epoch]]
        assert sum(spread) / len(spread) < 15
    assert ranks[0][0] != ranks[0][1]
    shuffled = torch.randperm(64, generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = [max(lengths[i] for i in shuffled[s : s + 4]) - min(lengths[i] for i in shuffled[s : s + 4]) for s in range(0, 64, 4)]
    assert sum(random_spread) / len(random_spread) > 25
