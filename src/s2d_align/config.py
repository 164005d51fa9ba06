"""Run configuration: frozen dataclasses, strict YAML in and out, ``a.b=c`` overrides.

A recipe is a YAML file whose keys mirror the dataclasses below. Loading is
strict: an unknown key or a value of the wrong type is an error that names the
key and the file. Every checkpoint and result directory gets the resolved
configuration beside it (:func:`save_config`), so a number can always be traced
back to the exact settings that produced it.

Values the paper lost in extraction (memory size, adapter width, LoRA rank,
per-stage epochs and learning rates) are defaults here; ``docs/architecture.md``
lists them and why they were chosen.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used, with the key and the file at fault."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class VisionConfig:
    """Frozen ViT image encoder E_v (paper: Visual Encoder)."""

    name_or_path: str = "microsoft/rad-dino"
    # Leading non-patch tokens (CLS, registers) to drop; null infers them from the model config.
    num_prefix_tokens: int | None = None


@dataclass(frozen=True)
class TextConfig:
    """Frozen BERT text encoder E_t for reference reports (S2) and key phrases (S3)."""

    name_or_path: str = "microsoft/BiomedVLP-CXR-BERT-specialized"
    max_length: int = 256


@dataclass(frozen=True)
class LLMConfig:
    """The decoder LLM, frozen in S1 and tuned with LoRA from S2 on."""

    name_or_path: str = "lmsys/vicuna-7b-v1.5"
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA on all linear layers of the transformer blocks (the paper's values were lost)."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.1
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclass(frozen=True)
class ConnectorConfig:
    """The connector between encoders and LLM.

    ``sma`` is the paper's Shallow-to-Deep Memory Adapter: one memory bank of
    ``num_memory`` queries shared by one adapter per modality. The other kinds
    are the connector ablations of the paper's Table 4: ``sma_unshared`` (one
    memory per adapter), ``mlp``, ``mlp_qformer`` (``num_memory`` queries per
    modality, ``qformer_layers`` blocks) and ``mlp_msa`` (SMA without memory);
    see :mod:`s2d_align.models.adapter`.
    """

    kind: Literal["sma", "sma_unshared", "mlp", "mlp_qformer", "mlp_msa"] = "sma"
    num_memory: int = 128
    memory_dim: int = 1024
    hidden_size: int = 2048
    num_heads: int = 8
    dropout: float = 0.1
    qformer_layers: int = 2  # mlp_qformer only


@dataclass(frozen=True)
class PromptConfig:
    """Text around the adapter tokens: ``prompt``, Z_v [, Z_r [, Z_k]], ``instruction``, report."""

    prompt: str = "USER: Here is a chest X-ray."
    instruction: str = "Write the FINDINGS section of its radiology report. ASSISTANT:"


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataConfig:
    manifest: str = "data/manifest.jsonl"
    max_images: int = 1
    max_report_tokens: int = 256
    # Stage-3 key phrases: each step draws a random subset of 1..max_key_phrases of them.
    max_key_phrases: int = 8
    # A study without a reference report: "empty" feeds an empty text, "skip" drops it
    # from stages that use references.
    missing_reference: Literal["empty", "skip"] = "empty"
    num_workers: int = 0
    # Image paths must lie in the manifest's folder or in this one (the --images / --jpg-root
    # given to prepare) unless absolute paths are allowed: see data.manifest.check_image_paths.
    image_root: str | None = None
    allow_absolute_paths: bool = False
    # The image check at the start of ``train`` (prepare has vetted every image already):
    # "header" reads each image's header and end marker, "full" decodes every pixel, "none"
    # only checks that the file exists. Passed checks are remembered in the run folder
    # (image_checks.json) by path, size and mtime, so a resume only stats each image.
    image_check: Literal["none", "header", "full"] = "header"
    image_check_workers: int = 8  # threads per process for that check


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class StageConfig:
    """One stage of the curriculum (paper: Progressive Anatomical Grounding).

    ``contexts`` lists the context kinds this stage trains on, each a ``+``-joined
    subset of ``image``, ``reference``, ``key_phrases`` that includes ``image``.
    A normal stage has one; the paper's *joint* ablation lists several and each
    batch draws one of them.
    """

    name: str
    contexts: tuple[str, ...] = ("image",)
    lora: bool = False
    epochs: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    patience: int = 1


@dataclass(frozen=True)
class TrainConfig:
    stages: tuple[StageConfig, ...] = (
        StageConfig(name="s1", contexts=("image",), lora=False, epochs=3, lr=1e-4, warmup_steps=500),
        StageConfig(name="s2", contexts=("image+reference",), lora=True, epochs=3, lr=5e-5, warmup_steps=500),
        StageConfig(
            name="s3", contexts=("image+reference+key_phrases",), lora=True, epochs=3, lr=5e-5, warmup_steps=500
        ),
    )
    seed: int = 42
    batch_size: int = 8
    eval_batch_size: int = 8
    grad_accum_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    # Validation loss is measured every ``eval_every`` optimizer steps (0: at each epoch's end).
    eval_every: int = 0
    min_delta: float = 0.0
    max_val_batches: int = 0  # 0: the whole validation split
    # Batch similar report lengths together (HF's group_by_length): megabatches of
    # up to 50 global batches are sorted by report length, so little of the LLM's
    # input is padding; the order is still random per epoch and fixed by the seed.
    group_by_length: bool = True


@dataclass(frozen=True)
class GenerateConfig:
    num_beams: int = 3
    # null: data.max_report_tokens, the longest report (EOS included) training admits.
    max_new_tokens: int | None = None
    min_new_tokens: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class EvaluateConfig:
    clean: Literal["none", "iu_xray", "mimic_cxr", "mimic_cxr_colon"] = "mimic_cxr"
    labeler: Literal["rules", "chexbert"] = "rules"


@dataclass(frozen=True)
class DemoConfig:
    """The phantom dataset that ``s2d-align demo`` draws before training."""

    studies: int = 600
    seed: int = 0
    image_size: int = 128
    # Text-only training steps of the tiny stand-in LLM (see models/tiny.py).
    llm_pretrain_steps: int = 300


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), saved: bool = False
) -> Config:
    """Read a recipe (or the defaults when ``path`` is None), apply ``a.b=c`` overrides, check every value.

    An error names its source: the recipe file, or the command-line override
    that introduced it (found by applying the overrides one at a time).
    ``saved``: the file is a checkpoint's own ``config.yaml``; a retired
    ``trust_remote_code`` key in it is ignored rather than refused.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = resolve_recipe(path)
        source = str(path)
        raw = read_recipe(path)
        reject_remote_code_keys(raw, source, drop=saved)
    try:
        return _checked(apply_overrides(raw, overrides), source)
    except ConfigError:
        if not overrides:
            raise
    for count in range(len(overrides) + 1):  # which step first makes the config invalid?
        where = source if count == 0 else f"command-line override `{overrides[count - 1]}`"
        try:
            _checked(apply_overrides(raw, overrides[:count]), where)
        except ConfigError as err:
            message = str(err)
            raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    raise AssertionError("unreachable: the full set of overrides failed")  # pragma: no cover


def _checked(raw: dict[str, Any], source: str) -> Config:
    reject_remote_code_keys(raw, source)
    config = from_dict(Config, raw, source)
    check_config(config, source)
    return config


REMOTE_CODE_KEYS = ("vision", "text", "llm")


def reject_remote_code_keys(raw: dict[str, Any], source: str, drop: bool = False) -> None:
    """Remote model code is a command-line opt-in (``--trust-remote-code``), never a file's setting.

    A recipe, or a received checkpoint's ``config.yaml``, that says
    ``model.<encoder>.trust_remote_code`` is refused with that hint; with
    ``drop`` (a checkpoint's own saved config from before this rule) the key
    is removed and ignored instead.
    """
    model = raw.get("model")
    if not isinstance(model, dict):
        return
    for part in REMOTE_CODE_KEYS:
        section = model.get(part)
        if isinstance(section, dict) and "trust_remote_code" in section:
            if drop:
                section.pop("trust_remote_code")
                continue
            raise ConfigError(
                f"{source}: model.{part}.trust_remote_code is not read from files; remote model code runs "
                "only when the command line says --trust-remote-code"
            )


def read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's plain data. ``base: other.yaml`` (relative to the recipe) is read first and
    deep-merged under it: mappings merge key by key, anything else (lists included) is replaced."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: recipes include each other in a loop ({' -> '.join(map(str, seen))})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not (path.parent / base).is_file():
        raise ConfigError(f"{path}: base {base!r} names no recipe file (paths are relative to {path.parent})")
    return _merge(read_recipe(path.parent / base, (*seen, path)), raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_recipe(path: str | Path) -> Path:
    """Find a recipe by path, or by name among the shipped ``configs/`` (``demo``, ``iu_xray/s2d_align``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    name = str(path) if str(path).endswith(".yaml") else f"{path}.yaml"
    for root in recipe_roots():
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"no recipe at {path!s} (looked in the working directory and {', '.join(map(str, recipe_roots()))})")


def recipe_roots() -> list[Path]:
    """Where shipped recipes live: the source checkout's ``configs/``, or the copy inside a wheel."""
    here = Path(__file__).resolve().parent
    return [p for p in (here.parents[1] / "configs", here / "configs") if p.is_dir()]


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Set dotted keys on a nested dict. Values are parsed as YAML (``x=3`` is an int, ``x=[a,b]`` a list).

    A list element is addressed by index (``train.stages.0.lr``) or, for lists of
    named mappings, by name (``train.stages.s1.lr``).
    """
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, text = item.partition("=")
        value = yaml.safe_load(text) if text.strip() else ""
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, key)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if last:
                node[part] = value
            else:
                if part not in node or node[part] is None:
                    node[part] = _default_subtree(parts[: i + 1])
                node = node[part]
    return raw


def _list_index(node: list, part: str, key: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ConfigError(f"override {key!r}: index {index} is out of range (the list has {len(node)} items)")
        return index
    for index, element in enumerate(node):
        if isinstance(element, dict) and element.get("name") == part:
            return index
    names = [e.get("name") for e in node if isinstance(e, dict)]
    raise ConfigError(f"override {key!r}: no element named {part!r} (have {names})")


def _default_subtree(parts: list[str]) -> Any:
    """The default value at a dotted path, as plain data, so overrides can reach into defaults."""
    node: Any = to_dict(Config())
    for part in parts:
        if isinstance(node, list):
            node = node[_list_index(node, part, ".".join(parts))]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return {}
    return node


def from_dict(cls: type, data: Any, source: str, where: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!r}{_did_you_mean(unknown[0], known)}"
            f" (known keys{' under ' + where if where else ''}: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, source, key)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{source}: {where or 'top level'}: {err}") from err


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, source, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if len(errors) == 1 else f"{source}: {key}: {value!r} fits none of {hint}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare ``no`` / ``off`` as false
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            value = next((w for w in words if w in args), value)
        if value not in args:
            hint = _did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads ``1e-4`` (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {hint}")  # pragma: no cover - a bug in this module


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- checking

# The parts a stage context is made of (models.adapter.MODALITIES; repeated here so that
# checking a recipe does not import torch).
CONTEXT_PARTS = ("image", "reference", "key_phrases")
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_config(config: Config, source: str = "<config>") -> None:
    """Every value in its range, before any work starts; the error names the key and ``source``.

    Types are checked while loading (:func:`from_dict`); this checks what a type
    cannot say: positive sizes and rates, probabilities, contexts, stage names.
    Without it ``batch_size=0`` or ``num_beams=0`` would reach PyTorch or
    transformers, whose errors do not name the key, and a context typo would be
    found only when its stage starts, after the stages before it had trained.
    """
    problems: list[str] = []

    def need(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            problems.append(f"{key} must be {what}, got {value!r}")

    def positive_int(key: str, value: int) -> None:
        need(value >= 1, key, value, "at least 1")

    def non_negative(key: str, value: float) -> None:
        need(value >= 0, key, value, "at least 0")

    def probability(key: str, value: float) -> None:
        need(0 <= value < 1, key, value, "in [0, 1)")

    m = config.model
    positive_int("model.text.max_length", m.text.max_length)
    if m.vision.num_prefix_tokens is not None:
        non_negative("model.vision.num_prefix_tokens", m.vision.num_prefix_tokens)
    positive_int("model.lora.r", m.lora.r)
    need(m.lora.alpha > 0, "model.lora.alpha", m.lora.alpha, "positive")
    probability("model.lora.dropout", m.lora.dropout)
    for name in ("num_memory", "memory_dim", "hidden_size", "num_heads", "qformer_layers"):
        positive_int(f"model.connector.{name}", getattr(m.connector, name))
    probability("model.connector.dropout", m.connector.dropout)
    if m.connector.num_heads >= 1 and m.connector.memory_dim % m.connector.num_heads:
        problems.append(f"model.connector.memory_dim ({m.connector.memory_dim}) must be a multiple of "
                        f"model.connector.num_heads ({m.connector.num_heads})")

    d = config.data
    for name in ("max_images", "max_report_tokens", "max_key_phrases"):
        positive_int(f"data.{name}", getattr(d, name))
    non_negative("data.num_workers", d.num_workers)

    t = config.train
    for name in ("batch_size", "eval_batch_size", "grad_accum_steps"):
        positive_int(f"train.{name}", getattr(t, name))
    for name in ("weight_decay", "eval_every", "min_delta", "max_val_batches"):
        non_negative(f"train.{name}", getattr(t, name))
    need(t.max_grad_norm > 0, "train.max_grad_norm", t.max_grad_norm, "positive")
    for i, beta in enumerate(t.adam_betas):
        probability(f"train.adam_betas[{i}]", beta)
    if not t.stages:
        problems.append("train.stages must list at least one stage")
    names: dict[str, int] = {}
    for i, stage in enumerate(t.stages):
        key = f"train.stages[{i}]"
        if not STAGE_NAME.fullmatch(stage.name):
            problems.append(f"{key}.name must be a folder name (letters, digits, '_', '-', '.'), got {stage.name!r}")
        elif stage.name in names:
            problems.append(f"{key}.name {stage.name!r} repeats train.stages[{names[stage.name]}].name")
        names.setdefault(stage.name, i)
        if not stage.contexts:
            problems.append(f"{key}.contexts must list at least one context, e.g. [image]")
        for j, context in enumerate(stage.contexts):
            problem = context_problem(context)
            if problem:
                problems.append(f"{key}.contexts[{j}] {problem}")
        positive_int(f"{key}.epochs", stage.epochs)
        need(stage.lr > 0, f"{key}.lr", stage.lr, "positive")
        non_negative(f"{key}.warmup_steps", stage.warmup_steps)
        positive_int(f"{key}.patience", stage.patience)

    g = config.generate
    for name in ("num_beams", "batch_size"):
        positive_int(f"generate.{name}", getattr(g, name))
    if g.max_new_tokens is not None:  # None: the training cap, data.max_report_tokens
        positive_int("generate.max_new_tokens", g.max_new_tokens)
    max_new = g.max_new_tokens if g.max_new_tokens is not None else config.data.max_report_tokens
    non_negative("generate.min_new_tokens", g.min_new_tokens)
    if g.min_new_tokens > max_new:
        problems.append(f"generate.min_new_tokens ({g.min_new_tokens}) must not exceed "
                        f"generate.max_new_tokens ({max_new})")
    need(g.repetition_penalty > 0, "generate.repetition_penalty", g.repetition_penalty, "positive")
    non_negative("generate.no_repeat_ngram_size", g.no_repeat_ngram_size)

    positive_int("demo.studies", config.demo.studies)
    need(config.demo.image_size >= 16, "demo.image_size", config.demo.image_size, "at least 16")
    non_negative("demo.llm_pretrain_steps", config.demo.llm_pretrain_steps)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def context_problem(context: str) -> str | None:
    """Why ``context`` is not a ``+``-joined set of :data:`CONTEXT_PARTS` including ``image``, or None."""
    parts = [p.strip() for p in context.split("+")]
    allowed = f"'+'-joined distinct names from {list(CONTEXT_PARTS)}, including 'image'"
    for part in parts:
        if part not in CONTEXT_PARTS:
            return f"{context!r}: unknown part {part!r}{_did_you_mean(part, CONTEXT_PARTS)}; a context is {allowed}"
    if "image" not in parts or len(set(parts)) != len(parts):
        return f"{context!r} is not {allowed}"
    return None


def looks_like_a_path(name: str) -> bool:
    """A model name that can only mean a local folder: a hub id is ``name`` or ``org/name``."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


def check_model_paths(config: Config, source: str = "<config>") -> None:
    """Local model folders exist: fail before a run starts, naming the key, rather than inside transformers."""
    for key in ("vision", "text", "llm"):
        name = getattr(config.model, key).name_or_path
        if looks_like_a_path(name) and not Path(name).expanduser().is_dir():
            raise ConfigError(f"{source}: model.{key}.name_or_path {name!r} looks like a local folder but there is "
                              "none; build one (e.g. `s2d-align prepare tiny-models`) or give a hub id (org/name)")


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (or their plain data)."""
    a, b = to_dict(a), to_dict(b)
    if isinstance(a, dict) and isinstance(b, dict):
        keys: list[str] = []
        for name in list(a) + [k for k in b if k not in a]:
            keys += differing_keys(a.get(name), b.get(name), f"{prefix}.{name}" if prefix else str(name))
        return keys
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b)) for k in differing_keys(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix]


# --------------------------------------------------------------------------- saving


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML or JSON."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    return config


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config; atomically, so that a reader never sees half a file."""
    from s2d_align import atomic

    atomic.write_text(path, to_yaml(config))


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that takes dotted keys: ``replace(cfg, **{"train.seed": 1})``."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace(getattr(config, head), **sub)
    return dataclasses.replace(config, **direct)
