"""Wall-time cost of the demo's CPU pins (s2d_align.reproducibility), measured side by side.

Each trial is a fresh process (the pins act when torch loads) doing the demo's
inner loop at its size: forward and backward of the tiny Llama (256 hidden,
2 layers) on a batch of 16 x 128 tokens, AdamW step. Trials alternate pinned /
unpinned so drifting machine load hits both alike; the ratio is what counts.

    PYTHONPATH=src python benchmarks/cpu_pins.py --trials 3 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from s2d_align.reproducibility import apply_threads
from transformers import LlamaConfig, LlamaForCausalLM
cpu = apply_threads()
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=1500, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(1500, (16, 128))
model(input_ids=ids, labels=ids).loss.backward()  # warm-up
optimizer.zero_grad()
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad()
print(json.dumps({"seconds": time.perf_counter() - start, "loss": loss.item(), "cpu": cpu}))
"""


def main() -> None:
    from s2d_align.reproducibility import PINS

    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    times: dict[str, list[float]] = {"unpinned": [], "pinned": []}
    for trial in range(args.trials):
        for mode, env in (("unpinned", clean), ("pinned", {**clean, **PINS})):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps)], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            result = json.loads(out)
            times[mode].append(result["seconds"])
            print(f"trial {trial + 1} {mode}: {result['seconds']:.2f} s, final loss {result['loss']:.6f}, "
                  f"threads {result['cpu']['torch_threads']}, capability {result['cpu']['cpu_capability']}", flush=True)
    ratios = [p / u for p, u in zip(times["pinned"], times["unpinned"])]
    print(f"pinned / unpinned wall time per trial: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {sorted(ratios)[len(ratios) // 2]:.3f}")


if __name__ == "__main__":
    main()
