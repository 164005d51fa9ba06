"""S3 training steps of the real-shaped model on one GPU: peak memory against ``s2d-align plan``, tokens/s, MFU.

The model has the exact shapes of Rad-DINO, CXR-BERT and Vicuna-7B v1.5 (all
32 decoder layers by default) with random weights built on the device, the
MIMIC recipe's SMA and LoRA, and stage S3's context (image + reference + key
phrases). Each layout runs ``--steps`` AdamW steps in bf16 autocast after two
warm-up steps, with every sample at the recipe's caps (as ``plan`` assumes for
memory). It prints, per layout:

- peak ``torch.cuda.max_memory_allocated`` against plan's estimate;
- tokens/s (LLM tokens, prompt + adapter tokens + instruction + report);
- MFU: plan's FLOPs per step over the step time, against a bf16 matmul peak
  measured in the same run (and against ``--peak-tflops``).

``--smoke`` runs the same code on CPU in minutes: 2 decoder layers, short
texts, one step per layout, fp32; its figures mean nothing, it checks the script.

    bash benchmarks/gpu_check.sh                # the GPU run (<= 10 min on one H100/H200)
    bash benchmarks/gpu_check.sh --smoke        # on CPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from s2d_align.config import load_config
from s2d_align.training.costs import shape_from_config
from s2d_align.training.plan import GIB, Lengths, Models, peak_memory, sample_costs, total

PROMPT_TOKENS, INSTRUCTION_TOKENS = 10, 17  # Vicuna's tokenizer on the recipe's prompt and instruction


def build(config, llm_layers: int, device: torch.device, dtype: torch.dtype = torch.bfloat16):
    """S2D-Align at the recipe's sizes around random real-shaped base models, built on ``device``."""
    from transformers import BertModel, Dinov2Model, LlamaForCausalLM

    from s2d_align.models.adapter import build_connector
    from s2d_align.models.llm import add_lora
    from s2d_align.models.model import S2DAlign
    from s2d_align.models.standins import hub_configs
    from s2d_align.models.text import TextEncoder
    from s2d_align.models.vision import VisionEncoder

    configs = hub_configs(llm_layers)
    m = config.model
    with torch.device(device):
        llm = LlamaForCausalLM(configs[2]).to(dtype)
        llm.requires_grad_(False)
        llm = add_lora(llm, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules)
        c = m.connector
        connector = build_connector(c.kind, {"image": 768, "reference": 768, "key_phrases": 768}, 4096,
                                    num_memory=c.num_memory, memory_dim=c.memory_dim, hidden_size=c.hidden_size,
                                    num_heads=c.num_heads, dropout=c.dropout, qformer_layers=c.qformer_layers)
        model = S2DAlign(VisionEncoder(Dinov2Model(configs[0]), 1), TextEncoder(BertModel(configs[1], add_pooling_layer=False)), connector, llm,
                         torch.full((PROMPT_TOKENS,), 5), torch.full((INSTRUCTION_TOKENS,), 6), 2, 0)
    shapes = Models(*(shape_from_config(c) for c in configs), PROMPT_TOKENS, INSTRUCTION_TOKENS)
    return model, shapes


def random_batch(lengths: Lengths, batch_size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = lambda n, vocab: torch.randint(3, vocab, (batch_size, n), generator=g).to(device)  # noqa: E731
    ones = lambda n: torch.ones(batch_size, n, dtype=torch.long, device=device)  # noqa: E731
    return {
        "pixel_values": torch.randn(batch_size, 1, 3, 518, 518, generator=g).to(device),
        "image_mask": torch.ones(batch_size, 1, dtype=torch.bool, device=device),
        "reference_ids": ids(lengths.reference, 30522), "reference_mask": ones(lengths.reference),
        "key_phrase_ids": ids(lengths.key_phrases, 30522), "key_phrase_mask": ones(lengths.key_phrases),
        "report_ids": ids(lengths.report, 32000), "report_mask": ones(lengths.report),
    }


def matmul_peak(device: torch.device, size: int = 8192, repeats: int = 20, dtype=torch.bfloat16) -> float:
    """Measured matmul FLOP/s on this device."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_layout(model, shapes, config, stage, batch, lengths, batch_size, checkpointing, steps, device) -> dict:
    from s2d_align.training.curriculum import apply_stage

    llm = model.llm.get_base_model()
    if checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_disable()
    params = apply_stage(model, stage)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    context = tuple(stage.contexts[0].split("+"))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses, counts = model(batch, context)
        (losses.sum() / counts.sum()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2 if device.type == "cuda" else 0):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    parts, sequence = sample_costs(config, shapes, lengths, context, stage.lora, checkpointing)
    flops = batch_size * total(parts).executed()
    trainable = sum(p.numel() for p in params)
    connector_params = sum(p.numel() for p in model.connector.parameters())
    estimate = peak_memory(config, shapes, lengths, context, stage.lora, trainable, connector_params, batch_size,
                           checkpointing)
    measured = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del optimizer
    return {
        "batch_size": batch_size, "checkpointing": checkpointing, "sequence": sequence,
        "step_seconds": seconds, "tokens_per_second": batch_size * sequence / seconds,
        "flops_per_step": flops, "achieved_tflops": flops / seconds / 1e12,
        "peak_gib_measured": measured / GIB if measured is not None else None,
        "peak_gib_plan": sum(estimate.values()) / GIB, "plan_items_gib": {k: v / GIB for k, v in estimate.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU check of the script: 2 layers, short texts, 1 step")
    parser.add_argument("--layers", type=int, default=32, help="Vicuna decoder layers (default: all 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per layout")
    parser.add_argument("--layouts", default="8:ckpt,4:nockpt", help="batch:ckpt|nockpt, comma-separated")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="nominal bf16 peak (default: H100 SXM)")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    overrides = ["model.lora.dropout=0.1"]
    if args.smoke:
        args.layers, args.steps, args.layouts = 2, 1, "1:ckpt,1:nockpt"
        overrides += ["data.max_report_tokens=16", "model.text.max_length=16", "model.connector.num_memory=8"]
    config = load_config("mimic_cxr/s2d_align", overrides)
    torch.manual_seed(0)
    start = time.perf_counter()
    # CPUs without bf16 matrix units crawl in bf16: the smoke run is fp32 throughout
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == torch.float32:
        config = load_config("mimic_cxr/s2d_align", [*overrides, "model.llm.dtype=float32", "train.mixed_precision=no"])
    model, shapes = build(config, args.layers, device, dtype)
    print(f"built the real-shaped model ({args.layers} LLM layers) on {device} in {time.perf_counter() - start:.0f} s")
    lengths = Lengths(config.data.max_report_tokens, config.model.text.max_length, config.model.text.max_length)
    stage = next(s for s in config.train.stages if s.name == "s3")
    peak = matmul_peak(device, size=1024 if device.type == "cpu" else 8192, repeats=3 if device.type == "cpu" else 20,
                       dtype=dtype)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "llm_layers": args.layers, "matmul_peak_tflops": peak / 1e12, "layouts": []}
    for layout in args.layouts.split(","):
        size, mode = layout.split(":")
        batch = random_batch(lengths, int(size), device)
        row = run_layout(model, shapes, config, stage, batch, lengths, int(size), mode == "ckpt", args.steps, device)
        row["mfu_measured_peak"] = row["achieved_tflops"] * 1e12 / peak
        row["mfu_nominal_peak"] = row["achieved_tflops"] / args.peak_tflops
        results["layouts"].append(row)
        measured = f"{row['peak_gib_measured']:.1f} GiB" if row["peak_gib_measured"] is not None else "n/a (CPU)"
        print(f"S3 batch {size} {'with' if mode == 'ckpt' else 'without'} checkpointing: peak {measured} "
              f"(plan {row['peak_gib_plan']:.1f} GiB), {row['tokens_per_second']:.3g} tokens/s, "
              f"{row['achieved_tflops']:.3g} TFLOP/s = MFU {row['mfu_measured_peak']:.1%} of the measured "
              f"{peak / 1e12:.3g} TFLOP/s matmul peak ({row['mfu_nominal_peak']:.1%} of {args.peak_tflops:g})")
        del batch
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
