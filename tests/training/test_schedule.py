"""The learning-rate schedule has the same shape on one process and on several."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cosine_with_warmup


def launch(script: Path, *args: str, processes: int, attempts: int = 3) -> None:
    """Run ``script`` on ``processes`` CPU processes that find each other as ``torchrun`` would tell them.

    The processes are started directly with the environment torchrun gives its
    workers (rank, world size, a master on 127.0.0.1, gloo on loopback), without
    torchrun's agent and rendezvous, whose extra sockets and host-name lookups
    made the test fail now and then on a busy machine. The master port is a free
    one, taken again only when another program grabbed it first; any other
    failure fails the test with every process's output.
    """
    for attempt in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        base = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port), "WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes),
                "GLOO_SOCKET_IFNAME": "lo"}
        workers = [
            subprocess.Popen([sys.executable, str(script), *args], env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(processes)
        ]
        outputs = []
        for worker in workers:
            try:
                outputs.append(worker.communicate(timeout=300)[0])
            except subprocess.TimeoutExpired:
                for w in workers:
                    w.kill()
                raise
        if all(w.returncode == 0 for w in workers):
            return
        if not any("address already in use" in out.lower() for out in outputs) or attempt + 1 == attempts:
            shown = "\n".join(f"--- rank {r} (exit {w.returncode}):\n{out[-4000:]}" for r, (w, out) in enumerate(zip(workers, outputs)))
            pytest.fail(f"{script.name} failed on {processes} process(es):\n{shown}")

WORKER = """
import json, sys
import torch
from accelerate import Accelerator
from s2d_align.training.loop import cosine_schedule, optimizer_steps_per_epoch

accelerator = Accelerator(cpu=True)
model = torch.nn.Linear(2, 1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
loader = torch.utils.data.DataLoader(list(range(64)), batch_size=4)
total = optimizer_steps_per_epoch(len(loader), accelerator.num_processes, 1)  # as the trainer counts
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


@pytest.mark.parametrize("processes", [1, 2])
def test_schedule_spans_the_stage_on_any_number_of_processes(tmp_path, processes):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    output = tmp_path / "rates.json"
    launch(script, str(output), processes=processes)
    rates = json.loads(output.read_text())
    assert len(rates) == 16 // processes
    assert rates == pytest.approx([cosine_with_warmup(step, 2, 16 // processes) for step in range(1, 16 // processes + 1)])


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
    # the sampler gets its epoch through the prepared loader, as in the trainer
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
    launch(script, str(output), ",".join(map(str, lengths)), processes=processes)
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
