"""``s2d-align plan``: what each curriculum stage of a recipe costs, and a batch layout that fits a GPU.

Per stage of PAG (paper, Progressive Anatomical Grounding) it reports the
trainable parameters, the LLM's sequence lengths (prompt + adapter tokens +
instruction + report), FLOPs per sample, peak memory per device with and
without gradient checkpointing, the micro-batch / accumulation /
checkpointing it recommends at the recipe's effective batch, and hours per
epoch at a given model-FLOPs utilisation. Every figure comes from the cost
model in :mod:`s2d_align.training.costs`, from model configs and tokenizers:
no weight is loaded, so it runs on a laptop before a GPU is rented.

Lengths come from the manifest's training split, tokenised as the collator
does; without a manifest, from the recipe's caps (every sample at its
longest). Memory is estimated at the longest sample (a batch may consist of
them), time at each sample's own length (length-grouped batches pad little).

The effective batch is the recipe's ``batch_size x grad_accum_steps`` (a
recipe is written for one process); with ``--gpus N`` each device takes
ceil(effective / N) samples per optimizer step.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from s2d_align.config import Config, ConfigError
from s2d_align.training.costs import (
    DTYPE_BYTES,
    Flops,
    Shape,
    adapter_flops,
    connector_parameter_groups,
    encoder_flops,
    llm_flops,
    llm_layer_activation_bytes,
    lora_parameter_count,
    lora_targets,
    parameter_count,
    read_shape,
    vision_tokens,
)

# Dense bf16 tensor-core peak of an H100 SXM (989 TFLOP/s; without sparsity). An A100 is 312.
DEFAULT_PEAK_TFLOPS = 989.0
# Share of --gpu-memory the plan fills: the CUDA context, cuBLAS workspaces and
# allocator fragmentation are not in the estimate.
HEADROOM = 0.9
# Below this micro-batch a GPU is poorly used; a larger checkpointed batch is preferred.
MIN_EFFICIENT_BATCH = 4
GIB = 2**30


@dataclass(frozen=True)
class Lengths:
    """One sample's token counts, as the collator produces them."""

    report: int  # LLM tokens of the report, EOS included
    reference: int  # text-encoder tokens of the reference report
    key_phrases: int  # text-encoder tokens of the joined key phrases


@dataclass(frozen=True)
class Models:
    vision: Shape
    text: Shape
    llm: Shape
    prompt_tokens: int  # BOS + prompt
    instruction_tokens: int


@dataclass
class Layout:
    micro_batch: int
    accumulation: int
    checkpointing: bool
    peak_bytes: float


@dataclass
class StagePlan:
    name: str
    contexts: tuple[tuple[str, ...], ...]
    trainable: dict[str, int]  # by group
    sequence: dict[str, int]  # p50 / p95 / max LLM tokens
    flops: dict[str, Flops]  # "mean" and "max" per sample, by the recipe's checkpointing setting
    parts: dict[str, float]  # model FLOPs of the longest sample by part
    memory: dict[str, dict[str, float]]  # "checkpointing" / "no checkpointing" -> bytes by item, recipe batch
    layout: Layout | None
    hours_per_epoch: float | None

    @property
    def trainable_total(self) -> int:
        return sum(self.trainable.values())


@dataclass
class Plan:
    config: Config
    models: Models
    parameters: dict[str, int]
    stages: list[StagePlan]
    gpus: int
    gpu_memory_gib: float
    mfu: float
    peak_tflops: float
    train_samples: int | None
    source: str  # where the lengths came from
    effective_batch: int = field(default=0)


# --------------------------------------------------------------------------- inputs


def read_models(config: Config) -> tuple[Models, object]:
    """Shapes of the three base models (configs first: a wrong path fails fast) and the LLM's tokenizer."""
    m = config.model
    vision = read_shape(m.vision.name_or_path, "model.vision.name_or_path")
    text = read_shape(m.text.name_or_path, "model.text.name_or_path")
    llm = read_shape(m.llm.name_or_path, "model.llm.name_or_path")
    llm_tokenizer = load_tokenizer(m.llm.name_or_path, "model.llm.name_or_path")
    prompt = len(llm_tokenizer(m.prompt.prompt, add_special_tokens=False).input_ids)
    prompt += int(llm_tokenizer.bos_token_id is not None)
    instruction = len(llm_tokenizer(m.prompt.instruction, add_special_tokens=False).input_ids)
    return Models(vision, text, llm, prompt, instruction), llm_tokenizer


def load_tokenizer(name_or_path: str, key: str, bert_family_check: bool = False):
    """A tokenizer without running remote code; a BERT-family text encoder's (CXR-BERT names a custom
    class) is BERT's WordPiece tokenizer, as ``models.text`` loads it."""
    from transformers import AutoTokenizer, PretrainedConfig

    from s2d_align.models.text import is_bert_family, load_bert_tokenizer

    try:
        if bert_family_check and is_bert_family(PretrainedConfig.get_config_dict(name_or_path)[0]):
            return load_bert_tokenizer(name_or_path)
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:  # noqa: BLE001 - one line for the user, whatever the cause
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={name_or_path!r}: cannot load its tokenizer ({reason}); "
                          f"pass {key}=<a local folder with the tokenizer files>") from err


def manifest_lengths(config: Config, manifest: Path, llm_tokenizer, text_tokenizer) -> list[Lengths]:
    """Token counts of every training study, tokenised as ``data.dataset.Collator`` does.

    Reports over ``data.max_report_tokens`` are cut as the collator cuts them (at a sentence end);
    key phrases count at their largest draw: the first ``max_key_phrases`` of them.
    """
    from s2d_align.data.dataset import KEY_PHRASE_SEPARATOR
    from s2d_align.data.manifest import read_manifest
    from s2d_align.data.report_cut import fitted_lengths

    studies = read_manifest(manifest)
    findings = {s.id: s.findings for s in studies}
    train = [s for s in studies if s.split == "train"]
    if not train:
        raise ConfigError(f"{manifest}: no study in the train split")
    cap, text_cap = config.data.max_report_tokens, config.model.text.max_length

    def text_counts(texts: list[str]) -> list[int]:
        ids = text_tokenizer(texts, truncation=True, max_length=text_cap).input_ids
        return [len(i) for i in ids]

    reports = [n + 1 for n in fitted_lengths([s.findings for s in train], llm_tokenizer, cap)]  # + EOS
    references = text_counts([findings.get(s.reference_id, "") if s.reference_id else "" for s in train])
    phrases = text_counts([
        KEY_PHRASE_SEPARATOR.join(k.text for k in s.key_phrases[: config.data.max_key_phrases]) for s in train
    ])
    return [Lengths(r, t, k) for r, t, k in zip(reports, references, phrases)]


def cap_lengths(config: Config) -> Lengths:
    return Lengths(config.data.max_report_tokens, config.model.text.max_length, config.model.text.max_length)


# --------------------------------------------------------------------------- per sample


def sample_costs(config: Config, models: Models, lengths: Lengths, context: Sequence[str], lora_trainable: bool,
                 checkpointing: bool) -> tuple[dict[str, Flops], int]:
    """FLOPs of one sample by part (vision, text, adapters, llm) and its LLM sequence length."""
    c = config.model.connector
    d_llm = models.llm.hidden
    views = config.data.max_images  # padded views run through the ViT too
    parts = {"vision": Flops(), "text": Flops(), "adapters": Flops()}
    for _ in range(views):
        parts["vision"] = parts["vision"] + encoder_flops(models.vision, vision_tokens(models.vision))
    flops, adapter_tokens = adapter_flops(c, views * models.vision.patches, models.vision.hidden, d_llm)
    parts["adapters"] = parts["adapters"] + flops
    for modality, tokens in (("reference", lengths.reference), ("key_phrases", lengths.key_phrases)):
        if modality in context:
            parts["text"] = parts["text"] + encoder_flops(models.text, tokens)
            flops, emitted = adapter_flops(c, tokens, models.text.hidden, d_llm)
            parts["adapters"] = parts["adapters"] + flops
            adapter_tokens += emitted
    sequence = models.prompt_tokens + adapter_tokens + models.instruction_tokens + lengths.report
    lora = lora_targets(models.llm, config.model.lora.target_modules)
    parts["llm"] = llm_flops(models.llm, sequence, lengths.report, lora, config.model.lora.r, lora_trainable,
                             checkpointing)
    return parts, sequence


def total(parts: dict[str, Flops]) -> Flops:
    out = Flops()
    for flops in parts.values():
        out = out + flops
    return out


# --------------------------------------------------------------------------- memory


def weight_bytes(config: Config, models: Models, connector_params: int) -> float:
    """Encoders as their checkpoints ship (fp32), the LLM in ``model.llm.dtype``, LoRA and connector in fp32."""
    llm = parameter_count(models.llm) * DTYPE_BYTES[config.model.llm.dtype]
    lora = lora_parameter_count(models.llm, config.model.lora.r, config.model.lora.target_modules)
    return 4.0 * (parameter_count(models.vision) + parameter_count(models.text) + lora + connector_params) + llm


def peak_memory(config: Config, models: Models, lengths: Lengths, context: Sequence[str], lora_trainable: bool,
                trainable: int, connector_params: int, micro_batch: int, checkpointing: bool) -> dict[str, float]:
    """Estimated peak bytes on one device, by item, for a micro-batch of samples of ``lengths``."""
    c = config.model.connector
    a = 2 if config.train.mixed_precision != "no" else DTYPE_BYTES[config.model.llm.dtype]
    _, sequence = sample_costs(config, models, lengths, context, lora_trainable, checkpointing)
    tokens = micro_batch * sequence
    llm = models.llm
    layer = llm_layer_activation_bytes(llm, config.model.lora.target_modules, config.model.lora.r, lora_trainable, config.model.lora.dropout, a)
    if checkpointing:  # each layer's input is kept; one layer's saved tensors live during its recompute
        activations = tokens * (llm.layers * a * llm.hidden + layer)
    else:
        activations = tokens * llm.layers * layer
    # bf16 logits of the report positions, their fp32 copy, log-softmax kept by the loss, its gradient
    logits = micro_batch * (lengths.report + 1) * llm.vocab * (a + 12)
    vit = models.vision
    encoders = micro_batch * config.data.max_images * vision_tokens(vit) * (4 * vit.hidden + vit.intermediate) * a
    features = {"image": config.data.max_images * vit.patches, "reference": lengths.reference,
                "key_phrases": lengths.key_phrases}
    connector = 0.0
    for modality in context:
        n = features[modality] if c.kind in ("mlp", "mlp_msa") else c.num_memory
        connector += micro_batch * 4.0 * (2 * features[modality] * c.memory_dim
                                          + n * (3 * c.memory_dim + 2 * c.hidden_size + llm.hidden))
    return {
        "weights": weight_bytes(config, models, connector_params),
        "gradients": 4.0 * trainable,
        "adamw": 8.0 * trainable,
        "activations": float(activations),
        "logits": float(logits),
        "encoders+adapters": float(encoders + connector),
    }


def recommend(share: int, budget: float, memory) -> Layout | None:
    """The fastest layout of ``share`` samples per device per step that fits ``budget`` bytes.

    Without checkpointing a step does ~25 % fewer FLOPs, so it wins when it fits
    at a micro-batch that keeps the GPU busy; otherwise the largest micro-batch
    that fits with checkpointing; a micro-batch of 1 without it as last resort.
    """
    divisors = [b for b in range(share, 0, -1) if share % b == 0]

    def largest(checkpointing: bool, at_least: int) -> Layout | None:
        for b in divisors:
            if b < at_least:
                break
            peak = memory(b, checkpointing)
            if peak <= budget:
                return Layout(b, share // b, checkpointing, peak)
        return None

    return (largest(False, min(share, MIN_EFFICIENT_BATCH)) or largest(True, 1) or largest(False, 1))


# --------------------------------------------------------------------------- the plan


def plan(config: Config, manifest: Path | None = None, gpus: int = 1, gpu_memory_gib: float = 80.0,
         mfu: float = 0.4, peak_tflops: float = DEFAULT_PEAK_TFLOPS, train_samples: int | None = None) -> Plan:
    """Cost every stage of ``config`` and recommend a layout for ``gpus`` devices of ``gpu_memory_gib`` each."""
    from s2d_align.training.curriculum import stage_contexts, trainable_groups

    if gpus < 1 or gpu_memory_gib <= 0 or not 0 < mfu <= 1 or peak_tflops <= 0:
        raise ConfigError("plan: --gpus must be >= 1, --gpu-memory and --peak-tflops > 0, --mfu in (0, 1]")
    m = config.model
    models, llm_tokenizer = read_models(config)
    if manifest is not None:
        text_tokenizer = load_tokenizer(m.text.name_or_path, "model.text.name_or_path", bert_family_check=True)
        samples = manifest_lengths(config, Path(manifest), llm_tokenizer, text_tokenizer)
        train_samples = len(samples)
        source = f"{manifest} ({len(samples):,} training studies)"
    else:
        samples = [cap_lengths(config)]
        source = "the recipe's caps (no manifest): every sample at its longest"
    distinct = Counter(samples)
    longest = Lengths(*(max(getattr(s, f) for s in samples) for f in ("report", "reference", "key_phrases")))
    groups = connector_parameter_groups(
        m.connector, {"image": models.vision.hidden, "reference": models.text.hidden,
                      "key_phrases": models.text.hidden}, models.llm.hidden)
    connector_params = sum(groups.values())
    lora_params = lora_parameter_count(models.llm, m.lora.r, m.lora.target_modules)
    parameters = {"vision": parameter_count(models.vision), "text": parameter_count(models.text),
                  "llm": parameter_count(models.llm), "lora": lora_params, "connector": connector_params}
    effective = config.train.batch_size * config.train.grad_accum_steps
    share = math.ceil(effective / gpus)
    budget = HEADROOM * gpu_memory_gib * GIB
    stages = []
    for stage in config.train.stages:
        contexts = tuple(stage_contexts(stage))
        wanted = trainable_groups(stage)
        trainable = {g: n for g, n in groups.items() if g in wanted and n}
        if stage.lora:
            trainable["lora"] = lora_params
        n_trainable = sum(trainable.values())
        widest = max(contexts, key=len)

        def memory(batch: int, checkpointing: bool, _stage=stage, _context=widest, _n=n_trainable) -> float:
            return sum(peak_memory(config, models, longest, _context, _stage.lora, _n, connector_params, batch,
                                   checkpointing).values())

        layout = recommend(share, budget, memory)
        checkpointing = layout.checkpointing if layout else m.llm.gradient_checkpointing
        sequences, mean = [], Flops()
        for context in contexts:  # a joint stage draws its context per batch: average over them
            for lengths, n in distinct.items():
                parts, sequence = sample_costs(config, models, lengths, context, stage.lora, checkpointing)
                sequences.extend([sequence] * n)
                mean = mean + total(parts).scaled(n)
        mean = mean.scaled(1 / len(sequences))
        parts, _ = sample_costs(config, models, longest, widest, stage.lora, checkpointing)
        sequences.sort()
        hours = None
        if train_samples:
            hours = train_samples * mean.executed() / (gpus * mfu * peak_tflops * 1e12) / 3600
        stages.append(StagePlan(
            name=stage.name,
            contexts=contexts,
            trainable=trainable,
            sequence={"p50": percentile(sequences, 50), "p95": percentile(sequences, 95), "max": sequences[-1]},
            flops={"mean": mean, "max": total(parts)},
            parts={k: v.model() for k, v in parts.items()},
            memory={label: peak_memory(config, models, longest, widest, stage.lora, n_trainable, connector_params,
                                       config.train.batch_size, ckpt)
                    for label, ckpt in (("checkpointing", True), ("no checkpointing", False))},
            layout=layout,
            hours_per_epoch=hours,
        ))
    return Plan(config, models, parameters, stages, gpus, gpu_memory_gib, mfu, peak_tflops, train_samples, source,
                effective)


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted list."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- report


def _tera(x: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} FLOP"


def _gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB" if x >= GIB / 10 else f"{x / 2**20:.1f} MiB"


def format_plan(p: Plan) -> str:
    c = p.config
    m = p.models
    lines = [
        f"base models: vision {c.model.vision.name_or_path} ({p.parameters['vision']:,} params, "
        f"{m.vision.layers} layers, {vision_tokens(m.vision)} tokens/image), text {c.model.text.name_or_path} "
        f"({p.parameters['text']:,}), LLM {c.model.llm.name_or_path} ({p.parameters['llm']:,}, {m.llm.layers} layers, "
        f"{c.model.llm.dtype})",
        f"connector {c.model.connector.kind}: {p.parameters['connector']:,} params; "
        f"LoRA r={c.model.lora.r}: {p.parameters['lora']:,} params",
        f"lengths from {p.source}",
        f"effective batch {p.effective_batch} (train.batch_size x train.grad_accum_steps) on {p.gpus} GPU(s) of "
        f"{p.gpu_memory_gib:g} GiB, planned to {HEADROOM:.0%} of it; time at {p.mfu:.0%} MFU of "
        f"{p.peak_tflops:g} TFLOP/s (default: H100 SXM dense bf16; A100: 312)",
    ]
    for s in p.stages:
        contexts = ", ".join("+".join(ctx) for ctx in s.contexts)
        groups = ", ".join(f"{g} {n:,}" for g, n in s.trainable.items())
        lines += [
            "",
            f"stage {s.name} [{contexts}]",
            f"  trainable parameters  {s.trainable_total:,} ({groups})",
            f"  LLM sequence (tokens) p50 {s.sequence['p50']}  p95 {s.sequence['p95']}  max {s.sequence['max']}  "
            f"(prompt {m.prompt_tokens} + adapter tokens + instruction {m.instruction_tokens} + report)",
            f"  FLOPs per sample      mean {_tera(s.flops['mean'].executed())}, longest {_tera(s.flops['max'].executed())}"
            f" executed (longest, model FLOPs: " + ", ".join(f"{k} {_tera(v)}" for k, v in s.parts.items()) + ")",
        ]
        for label, items in s.memory.items():
            detail = ", ".join(f"{k} {_gib(v)}" for k, v in items.items())
            lines.append(f"  peak memory, batch {c.train.batch_size}, {label}: {_gib(sum(items.values()))} ({detail})")
        if s.layout is None:
            lines.append(f"  recommended           nothing fits: even one sample exceeds {p.gpu_memory_gib:g} GiB")
        else:
            lay = s.layout
            lines.append(
                f"  recommended           train.batch_size={lay.micro_batch} train.grad_accum_steps={lay.accumulation}"
                f" model.llm.gradient_checkpointing={str(lay.checkpointing).lower()} on {p.gpus} GPU(s): "
                f"{_gib(lay.peak_bytes)} per device")
        if s.hours_per_epoch is not None:
            lines.append(f"  time                  {s.hours_per_epoch:.2f} h per epoch ({p.train_samples:,} samples)")
        else:
            lines.append("  time                  pass --manifest or --train-samples for hours per epoch")
    return "\n".join(lines)
