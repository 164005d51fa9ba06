"""The analytic cost model of one training sample: parameters, FLOPs and memory, from model configs alone.

``s2d-align plan`` must answer "will this recipe fit, and how long will it
take?" before anyone downloads 14 GB of Vicuna or rents a GPU, so nothing here
loads a weight: the shapes come from each base model's ``config.json``
(``AutoConfig``), the connector's from the recipe.

FLOPs follow the convention of ``torch.utils.flop_counter.FlopCounterMode``
(and of MFU reporting): 2 x multiply-accumulates of every matmul and
convolution, attention as its two batched matmuls over the full (not causally
halved) score matrix; element-wise work (norms, activations, softmax) is not
counted. Backward costs are derived from what autograd actually computes in
S2D-Align's curriculum (paper, Progressive Anatomical Grounding):

- the encoders E_v and E_t run under ``no_grad``: forward only;
- the LLM's own weights never train, yet the gradient must reach the adapter
  tokens at the LLM's input, so every LLM matmul pays its input gradient
  (1x forward) and only trainable weights (LoRA from S2 on) pay a weight
  gradient (another 1x);
- LoRA is attached in every stage (see ``models/llm.py``), so its matmuls run
  and pass input gradients even in S1, where they are frozen;
- an adapter's key/value projections of encoder features need a weight
  gradient only (the features carry no gradient);
- attention backward is 2.5x its forward: the fused kernels GPUs run (flash,
  memory-efficient) recompute the scores, as torch's own
  ``sdpa_backward_flop_count`` counts (the unfused math path does 2x);
- gradient checkpointing recomputes each decoder layer's forward once more.

Memory is an estimate of the tensors autograd keeps, itemised in
:func:`llm_layer_activation_bytes`; it leaves out the CUDA context, cuBLAS
workspaces and allocator fragmentation, which is why the planner keeps a
headroom (see :mod:`s2d_align.training.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2d_align.config import ConfigError

LLAMA_FAMILY = ("llama", "mistral")
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_BACKWARD = 2.5  # dQ, dK, dV, dP and the recomputed scores: five matmuls to the forward's two
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """What the cost model needs of one transformer, read from its ``config.json``."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = 0
    positions: int = 0
    tied: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    type_vocab: int = 0  # BERT
    image_size: int = 0  # ViT
    patch_size: int = 0
    registers: int = 0
    channels: int = 3

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def read_shape(name_or_path: str, key: str) -> Shape:
    """The shape of the model at ``name_or_path`` (folder or hub id), from its config only.

    ``key`` is the recipe key that named it, so that a config which cannot be
    read gives one line saying which setting to change.
    """
    from transformers import AutoConfig, PretrainedConfig

    from s2d_align.models.text import bert_config, is_bert_family

    try:
        raw, _ = PretrainedConfig.get_config_dict(name_or_path)
        if is_bert_family(raw):  # CXR-BERT names its own config class; its shapes are BERT's
            config = bert_config(raw)
        else:
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - hub, file and parse errors all mean the same to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}={name_or_path!r}: cannot read its config.json ({reason}); "
            f"pass {key}=<a local folder with config.json>"
        ) from err
    return shape_from_config(config, key)


def shape_from_config(config, key: str = "model") -> Shape:
    kind = config.model_type
    if kind in LLAMA_FAMILY:
        heads = config.num_attention_heads
        return Shape(
            model_type=kind,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            positions=config.max_position_embeddings,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(config, "attention_bias", False)),
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
        )
    if kind == "bert":
        return Shape(
            model_type=kind,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_attention_heads,
            head_dim=config.hidden_size // config.num_attention_heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            positions=config.max_position_embeddings,
            type_vocab=config.type_vocab_size,
        )
    if kind in ("dinov2", "dinov2_with_registers"):
        if getattr(config, "use_swiglu_ffn", False):
            raise ConfigError(f"{key}: DINOv2 with a SwiGLU feed-forward is not in the cost model")
        return Shape(
            model_type=kind,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_attention_heads,
            head_dim=config.hidden_size // config.num_attention_heads,
            intermediate=int(config.hidden_size * config.mlp_ratio),
            image_size=config.image_size,
            patch_size=config.patch_size,
            registers=int(getattr(config, "num_register_tokens", 0) or 0),
            channels=config.num_channels,
        )
    raise ConfigError(
        f"{key}: model_type {kind!r} is not in the cost model (it knows {', '.join(LLAMA_FAMILY)}, bert, dinov2)"
    )


# --------------------------------------------------------------------------- parameters


def parameter_count(shape: Shape, pooler: bool = False) -> int:
    """Exact parameter count of the model for ``shape``: the LLM as ``AutoModelForCausalLM``, the ViT as
    ``AutoModel``, BERT as S2D-Align loads it (``BertModel`` without its pooler unless ``pooler``)."""
    h, i = shape.hidden, shape.intermediate
    if shape.model_type in LLAMA_FAMILY:
        q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        attention = h * q + 2 * h * kv + q * h + (q + 2 * kv + h if shape.attention_bias else 0)
        mlp = 3 * h * i + (2 * i + h if shape.mlp_bias else 0)
        layer = attention + mlp + 2 * h  # two RMSNorms
        head = 0 if shape.tied else shape.vocab * h
        return shape.vocab * h + shape.layers * layer + h + head
    if shape.model_type == "bert":
        embeddings = (shape.vocab + shape.positions + shape.type_vocab) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return embeddings + shape.layers * layer + ((h * h + h) if pooler else 0)
    # DINOv2: CLS, mask token, registers, position embeddings, patch convolution
    embeddings = 2 * h + shape.registers * h + (shape.patches + 1) * h + shape.channels * shape.patch_size**2 * h + h
    layer = 2 * h + 4 * (h * h + h) + h + 2 * h + (h * i + i) + (i * h + h) + h  # norms, attention, 2 layer scales, MLP
    return embeddings + shape.layers * layer + 2 * h


def lora_targets(shape: Shape, target_modules) -> list[tuple[int, int]]:
    """(in, out) of every LLM projection LoRA wraps in one decoder layer; ``all-linear`` is PEFT's (no lm_head)."""
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    dims = {
        "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
    }
    names = LLAMA_PROJECTIONS if target_modules == "all-linear" else tuple(target_modules)
    unknown = [n for n in names if n not in dims]
    if unknown:
        raise ConfigError(f"model.lora.target_modules: {unknown} are not projections of {shape.model_type} ({list(dims)})")
    return [dims[n] for n in names]


def lora_parameter_count(shape: Shape, r: int, target_modules) -> int:
    return shape.layers * sum(r * (d_in + d_out) for d_in, d_out in lora_targets(shape, target_modules))


def connector_parameter_groups(connector, in_dims: dict[str, int], out_dim: int) -> dict[str, int]:
    """Parameters per curriculum group (``memory``, ``image``, ...) of the recipe's connector, built on meta."""
    import torch

    from s2d_align.models.adapter import build_connector

    with torch.device("meta"):
        module = build_connector(
            connector.kind, dict(in_dims), out_dim, num_memory=connector.num_memory, memory_dim=connector.memory_dim,
            hidden_size=connector.hidden_size, num_heads=connector.num_heads, dropout=connector.dropout,
            qformer_layers=connector.qformer_layers,
        )
    params = dict(module.named_parameters())
    return {group: sum(params[n].numel() for n in names) for group, names in module.parameter_groups().items()}


# --------------------------------------------------------------------------- FLOPs


@dataclass
class Flops:
    """FLOPs of one sample: forward, backward, and the forward that checkpointing recomputes."""

    forward: float = 0.0
    backward: float = 0.0
    recompute: float = 0.0

    def linear(self, tokens: int, d_in: int, d_out: int, input_grad: bool, weight_grad: bool) -> "Flops":
        f = 2.0 * tokens * d_in * d_out
        self.forward += f
        self.backward += f * (int(input_grad) + int(weight_grad))
        return self

    def attention(self, q_len: int, kv_len: int, width: int, grad: bool) -> "Flops":
        f = 4.0 * q_len * kv_len * width  # Q K^T and P V
        self.forward += f
        self.backward += ATTENTION_BACKWARD * f if grad else 0.0
        return self

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.forward + other.forward, self.backward + other.backward, self.recompute + other.recompute)

    def scaled(self, k: float) -> "Flops":
        return Flops(self.forward * k, self.backward * k, self.recompute * k)

    def model(self) -> float:
        """What MFU counts: forward + backward."""
        return self.forward + self.backward

    def executed(self) -> float:
        """What the GPU runs: the model FLOPs plus any recomputation."""
        return self.forward + self.backward + self.recompute


def encoder_flops(shape: Shape, tokens: int) -> Flops:
    """A frozen BERT or ViT forward over ``tokens`` tokens (no backward: it runs under ``no_grad``)."""
    layer = Flops()
    h, i = shape.hidden, shape.intermediate
    layer.linear(tokens, h, 3 * h, False, False).linear(tokens, h, h, False, False)
    layer.attention(tokens, tokens, h, grad=False)
    layer.linear(tokens, h, i, False, False).linear(tokens, i, h, False, False)
    flops = layer.scaled(shape.layers)
    if shape.model_type != "bert":  # S2D-Align's BERT has no pooler
        flops.linear(shape.patches, shape.channels * shape.patch_size**2, h, False, False)  # patch convolution
    return flops


def vision_tokens(shape: Shape) -> int:
    """Tokens inside the ViT: CLS, registers, patches."""
    return 1 + shape.registers + shape.patches


def adapter_flops(connector, features: int, d_in: int, d_out: int) -> tuple[Flops, int]:
    """One modality's adapter (trainable) over ``features`` encoder tokens -> (FLOPs, tokens it emits)."""
    c = connector
    e, hid = c.memory_dim, c.hidden_size
    flops = Flops()
    if c.kind in ("sma", "sma_unshared"):
        n = c.num_memory
        flops.linear(n, e, e, True, True)  # queries from the memory bank
        flops.linear(features, d_in, e, False, True).linear(features, d_in, e, False, True)  # keys, values
        flops.attention(n, features, e, grad=True)
        flops.linear(n, e, e, True, True)  # attention output
        flops.linear(n, e, hid, True, True).linear(n, hid, hid, True, True).linear(n, hid, d_out, True, True)
        return flops, n
    if c.kind == "mlp":
        flops.linear(features, d_in, hid, False, True).linear(features, hid, d_out, True, True)
        return flops, features
    if c.kind == "mlp_msa":
        flops.linear(features, d_in, e, False, True)
        flops.linear(features, e, 3 * e, True, True).attention(features, features, e, grad=True)
        flops.linear(features, e, e, True, True)
        flops.linear(features, e, hid, True, True).linear(features, hid, hid, True, True)
        flops.linear(features, hid, d_out, True, True)
        return flops, features
    if c.kind == "mlp_qformer":
        n = c.num_memory
        for _ in range(c.qformer_layers):
            flops.linear(n, e, 3 * e, True, True).attention(n, n, e, grad=True).linear(n, e, e, True, True)
            flops.linear(n, e, e, True, True)  # cross-attention queries
            flops.linear(features, d_in, e, False, True).linear(features, d_in, e, False, True)
            flops.attention(n, features, e, grad=True).linear(n, e, e, True, True)
            flops.linear(n, e, 4 * e, True, True).linear(n, 4 * e, e, True, True)
        flops.linear(n, e, hid, True, True).linear(n, hid, d_out, True, True)
        return flops, n
    raise ConfigError(f"model.connector.kind: {c.kind!r} is not in the cost model")


def llm_flops(shape: Shape, sequence: int, report: int, lora: list[tuple[int, int]], r: int,
              lora_trainable: bool, checkpointing: bool) -> Flops:
    """The LLM's forward and backward over ``sequence`` tokens, logits for the last ``report + 1`` only."""
    h = shape.hidden
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    base = [(h, q), (h, kv), (h, kv), (q, h), (h, shape.intermediate), (h, shape.intermediate), (shape.intermediate, h)]
    layer = Flops()
    for d_in, d_out in base:
        layer.linear(sequence, d_in, d_out, True, False)
    for d_in, d_out in lora:
        layer.linear(sequence, d_in, r, True, lora_trainable).linear(sequence, r, d_out, True, lora_trainable)
    layer.attention(sequence, sequence, q, grad=True)
    if checkpointing:
        layer.recompute = layer.forward
    return layer.scaled(shape.layers).linear(report + 1, h, shape.vocab, True, False)  # + lm_head


# --------------------------------------------------------------------------- memory


# Which tensor each projection reads: with LoRA dropout off, projections that read the same
# tensor (q/k/v; gate/up) save it once.
LLAMA_INPUTS = {"q_proj": "attention_in", "k_proj": "attention_in", "v_proj": "attention_in", "o_proj": "attention_out",
                "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_hidden"}


def llm_layer_activation_bytes(shape: Shape, target_modules, r: int, lora_trainable: bool,
                               lora_dropout: float, activation_bytes: int) -> float:
    """Bytes one HF Llama decoder layer (+ PEFT LoRA) keeps for backward, per token.

    - two RMSNorms upcast their input to fp32 and keep it (2 x 4h), and their
      fp32 inverse RMS (2 x 4);
    - RoPE keeps cos and sin (2 x head_dim);
    - scaled-dot-product attention keeps q, k, v, its output (flash or
      memory-efficient kernels: no score matrix) and an fp32 logsumexp per head;
    - the SwiGLU MLP keeps the gate (SiLU's input), SiLU's output and the up
      projection: 3 x I;
    - frozen base projections keep nothing (no weight gradient needs their input);
    - each LoRA projection keeps its dropout mask (1 byte a value, CUDA's fused
      dropout) whenever dropout is on and, when LoRA trains, the input of its A
      matrix (shared between projections that read one tensor when dropout is
      off) and A's r outputs. (On CPU dropout keeps its mask in the
      activation dtype, 4x more than on CUDA.)

    Checked against the tensors autograd saves on CPU (``tests/training/test_plan.py``).
    """
    a = activation_bytes
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    total = 2 * (4 * shape.hidden + 4) + 2 * a * shape.head_dim + a * (2 * q + 2 * kv) + 4 * shape.heads
    total += 3 * a * shape.intermediate
    names = LLAMA_PROJECTIONS if target_modules == "all-linear" else tuple(target_modules)
    inputs_seen = {"attention_out"}  # o_proj reads the attention output, which attention already keeps
    for name, (d_in, _) in zip(names, lora_targets(shape, target_modules)):
        total += d_in if lora_dropout > 0 else 0
        if lora_trainable:
            source = name if lora_dropout > 0 else LLAMA_INPUTS[name]
            total += a * r + (a * d_in if source not in inputs_seen else 0)
            inputs_seen.add(source)
    return float(total)
