"""``s2d-align plan``: parameter counts pinned exactly, FLOPs against torch's FlopCounterMode.

Two sizes: the tiny random models of ``conftest.py`` (real forward and
backward on CPU), and the real shapes of Rad-DINO, CXR-BERT and Vicuna-7B
v1.5 built on the meta device, where FlopCounterMode counts every matmul of
the real model's forward and backward without computing anything.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from s2d_align.config import ConfigError, load_config
from s2d_align.data.dataset import Collator, TrainingDataset
from s2d_align.data.manifest import read_manifest
from s2d_align.training.costs import (
    Flops,
    lora_parameter_count,
    parameter_count,
    shape_from_config,
)
from s2d_align.training.plan import Lengths, Models, plan, recommend, sample_costs, total

def real_configs(llm_layers: int = 32):
    from s2d_align.models.standins import hub_configs

    return hub_configs(llm_layers)


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- parameters


def test_real_shaped_parameter_counts_are_exact():
    from transformers import BertModel, Dinov2Model, LlamaForCausalLM

    vision, text, llm = real_configs()
    counts = {name: parameter_count(shape_from_config(c)) for name, c in (("vision", vision), ("text", text), ("llm", llm))}
    assert counts == {"vision": 86_580_480, "text": 108_891_648, "llm": 6_738_415_616}  # BERT without its pooler
    assert parameter_count(shape_from_config(text), pooler=True) == 109_482_240
    assert lora_parameter_count(shape_from_config(llm), 32, "all-linear") == 79_953_920
    with torch.device("meta"):  # the transformers classes agree, parameter for parameter
        assert numel(Dinov2Model(vision)) == counts["vision"]
        assert numel(BertModel(text, add_pooling_layer=False)) == counts["text"]
        assert numel(BertModel(text)) == 109_482_240
        assert numel(LlamaForCausalLM(real_configs(2)[2])) == parameter_count(shape_from_config(real_configs(2)[2]))


def test_tiny_parameter_counts_match_the_built_model(tiny_world):
    from s2d_align.models.model import build_model

    config = tiny_world.config()
    result = plan(config, manifest=tiny_world.manifest, gpu_memory_gib=1)
    assert result.parameters == {"vision": 28_128, "text": 28_032, "llm": 110_272, "lora": 8_704, "connector": 16_384}
    torch.manual_seed(0)
    model = build_model(config.model).model
    assert numel(model.vision) == 28_128 and numel(model.text) == 28_032 and numel(model.connector) == 16_384
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    assert lora == 8_704 and numel(model.llm) - lora == 110_272
    from s2d_align.training.curriculum import apply_stage

    for stage, expected in zip(config.train.stages, (5_504, 19_648, 25_088)):
        trainable = sum(p.numel() for p in apply_stage(model, stage))
        assert trainable == expected == next(s.trainable_total for s in result.stages if s.name == stage.name)


# --------------------------------------------------------------------------- FLOPs


def cpu_attention_formulas() -> dict:
    """FlopCounterMode has formulas for the CUDA attention kernels, not for the CPU flash kernel that
    ``scaled_dot_product_attention`` dispatches to here; give it the same formulas torch uses for them."""
    from torch.utils import flop_counter

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def counted(model, batch, context, stage) -> float:
    from s2d_align.training.curriculum import apply_stage

    apply_stage(model, stage)
    model.train()
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as counter:
        losses, _ = model(batch, context)
        losses.sum().backward()
    return float(counter.get_total_flops())


def tiny_models(config, built) -> Models:
    from transformers import AutoConfig

    m = config.model
    shape = lambda p: shape_from_config(AutoConfig.from_pretrained(p))  # noqa: E731
    model = built.model
    return Models(shape(m.vision.name_or_path), shape(m.text.name_or_path), shape(m.llm.name_or_path),
                  len(model.prompt_ids), len(model.instruction_ids))


@pytest.fixture(scope="module")
def tiny_setup(tiny_world):
    """A tiny model and one collated batch of four training studies."""
    from s2d_align.models.model import build_model

    config = tiny_world.config()
    torch.manual_seed(0)
    built = build_model(config.model)
    studies = read_manifest(tiny_world.manifest)
    dataset = TrainingDataset([s for s in studies if s.split == "train"], {s.id: s.findings for s in studies},
                              tiny_world.manifest, built.preprocess, 1, 8)
    collate = Collator(built.tokenizers.llm, built.tokenizers.text, config.data.max_report_tokens,
                       config.model.text.max_length)
    return config, built, collate([dataset[i] for i in range(4)])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_flops_match_flop_counter(tiny_setup, checkpointing):
    config, built, batch = tiny_setup
    llm = built.model.llm.get_base_model()
    if checkpointing:  # recomputation shows in the count: FlopCounterMode sees the recomputed forward
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lengths = Lengths(batch["report_ids"].shape[1], batch["reference_ids"].shape[1], batch["key_phrase_ids"].shape[1])
    models = tiny_models(config, built)
    try:
        for stage in config.train.stages:
            context = tuple(stage.contexts[0].split("+"))
            expected = counted(built.model, batch, context, stage)
            parts, _ = sample_costs(config, models, lengths, context, stage.lora, checkpointing)
            estimate = 4 * total(parts).executed()
        assert abs(estimate - expected) / expected < 0.05, (stage.name, estimate, expected)
    finally:
        llm.gradient_checkpointing_disable()


@pytest.fixture
def meta_masks(monkeypatch):
    """HF's mask helpers peek at mask values to skip an all-ones mask; meta tensors have none."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "_ignore_causal_mask_sdpa", lambda *a, **k: False)
    monkeypatch.setattr(masking, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False)


def test_real_shaped_flops_match_flop_counter_on_meta(meta_masks):
    """Rad-DINO + CXR-BERT + Vicuna-7B (2 layers, bf16) + SMA at the MIMIC recipe's sizes, stage S3."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertModel, Dinov2Model, LlamaForCausalLM

    from s2d_align.models.adapter import build_connector
    from s2d_align.models.model import S2DAlign
    from s2d_align.models.text import TextEncoder
    from s2d_align.models.vision import VisionEncoder

    config = load_config("mimic_cxr/s2d_align", ["model.lora.dropout=0.0"])
    vision_cfg, text_cfg, llm_cfg = real_configs(llm_layers=2)
    prompt, instruction, batch_size = 10, 17, 2
    with torch.device("meta"):
        llm = LlamaForCausalLM(llm_cfg).to(torch.bfloat16)
        llm.requires_grad_(False)
        llm = get_peft_model(llm, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
        c = config.model.connector
        connector = build_connector(c.kind, {"image": 768, "reference": 768, "key_phrases": 768}, 4096,
                                    num_memory=c.num_memory, memory_dim=c.memory_dim, hidden_size=c.hidden_size,
                                    num_heads=c.num_heads, dropout=0.0, qformer_layers=c.qformer_layers)
        model = S2DAlign(VisionEncoder(Dinov2Model(vision_cfg), 1), TextEncoder(BertModel(text_cfg, add_pooling_layer=False)), connector, llm,
                         torch.zeros(prompt, dtype=torch.long), torch.zeros(instruction, dtype=torch.long), 2, 0)
        lengths = Lengths(report=180, reference=120, key_phrases=40)
        batch = {
            "pixel_values": torch.zeros(batch_size, 1, 3, 518, 518),
            "image_mask": torch.ones(batch_size, 1, dtype=torch.bool),
            "reference_ids": torch.zeros(batch_size, lengths.reference, dtype=torch.long),
            "reference_mask": torch.ones(batch_size, lengths.reference, dtype=torch.long),
            "key_phrase_ids": torch.zeros(batch_size, lengths.key_phrases, dtype=torch.long),
            "key_phrase_mask": torch.ones(batch_size, lengths.key_phrases, dtype=torch.long),
            "report_ids": torch.zeros(batch_size, lengths.report, dtype=torch.long),
            "report_mask": torch.ones(batch_size, lengths.report, dtype=torch.long),
        }
    models = Models(shape_from_config(vision_cfg), shape_from_config(text_cfg), shape_from_config(llm_cfg), prompt,
                    instruction)
    for stage in config.train.stages:
        context = tuple(stage.contexts[0].split("+"))
        expected = counted(model, batch, context, stage)
        parts, sequence = sample_costs(config, models, lengths, context, stage.lora, checkpointing=False)
        estimate = batch_size * total(parts).executed()
        assert abs(estimate - expected) / expected < 0.05, (stage.name, estimate, expected)
    assert sequence == prompt + 3 * 128 + instruction + 180


# --------------------------------------------------------------------------- the rest of the plan


def test_recommend_prefers_no_checkpointing_when_it_fits_a_useful_batch():
    memory = lambda b, ckpt: 10.0 + b * (1.0 if ckpt else 4.0)  # noqa: E731
    layout = recommend(16, 30.0, memory)
    assert (layout.micro_batch, layout.accumulation, layout.checkpointing, layout.peak_bytes) == (4, 4, False, 26.0)
    layout = recommend(16, 20.0, memory)  # no-checkpointing fits only at 2: checkpointing at 8 instead
    assert (layout.micro_batch, layout.accumulation, layout.checkpointing, layout.peak_bytes) == (8, 2, True, 18.0)
    assert recommend(16, 10.5, memory) is None


def test_plan_without_manifest_uses_the_caps(tiny_world):
    result = plan(tiny_world.config(), gpus=2, gpu_memory_gib=1, train_samples=1000)
    s3 = result.stages[-1]
    # caps: report 48, each text 32 tokens; 4 memory tokens per adapter; prompt 7 and instruction 9 tokens
    assert s3.sequence == {"p50": 7 + 12 + 9 + 48, "p95": 76, "max": 76}
    assert result.effective_batch == 4 and s3.layout.micro_batch * s3.layout.accumulation == 2
    expected_hours = 1000 * s3.flops["mean"].executed() / (2 * 0.4 * 989e12) / 3600
    assert s3.hours_per_epoch == pytest.approx(expected_hours)
    assert isinstance(s3.flops["mean"], Flops)


def test_unreadable_model_is_one_line_naming_the_key(tiny_world, tmp_path):
    config = tiny_world.config(f"model.llm.name_or_path={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError) as err:
        plan(config)
    message = str(err.value)
    assert message.startswith(f"model.llm.name_or_path='{tmp_path / 'nowhere'}': cannot read its config.json")
    assert "\n" not in message


def test_cli_prints_every_stage(tiny_world, capsys):
    from s2d_align.cli import main

    m = tiny_world.models
    code = main(["plan", "--config", "demo", "--manifest", str(tiny_world.manifest), "--gpu-memory", "2",
                 f"model.vision.name_or_path={m['vision']}", f"model.text.name_or_path={m['text']}",
                 f"model.llm.name_or_path={m['llm']}"])
    out = capsys.readouterr().out
    assert code == 0
    for stage in ("s1", "s2", "s3"):
        assert f"stage {stage} [" in out
    assert out.count("recommended           train.batch_size=") == 3


# --------------------------------------------------------------------------- memory


def bytes_saved_by_the_first_layer(model, base, batch: int, length: int, width: int) -> int:
    """Bytes autograd keeps for backward of ``base.layers[0]`` on random input, each storage once, no parameter."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameters:
            saved[pointer] = max(saved.get(pointer, 0), tensor.untyped_storage().nbytes())
        return tensor

    hidden = torch.randn(batch, length, width, requires_grad=True)
    positions = torch.arange(length).expand(batch, length)
    rotary = base.rotary_emb(hidden, positions)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        base.layers[0](hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
    return sum(saved.values())


def test_decoder_layer_activations_match_what_autograd_saves(tiny_setup):
    """The activation term of the memory estimate, against the tensors autograd keeps for backward.

    Measured with ``saved_tensors_hooks`` on one decoder layer of the tiny LLM (fp32, LoRA dropout
    off as in the test config), counting each storage once and no parameter. Allocator peaks cannot
    be measured on CPU; ``benchmarks/gpu_check.sh`` compares the whole estimate on a GPU.
    """
    from s2d_align.training.costs import llm_layer_activation_bytes
    from s2d_align.training.curriculum import apply_stage

    config, built, _ = tiny_setup
    models = tiny_models(config, built)
    base = built.model.llm.get_base_model().model
    batch, length = 4, 40
    for stage in config.train.stages:
        apply_stage(built.model, stage)
        built.model.train()
        saved = bytes_saved_by_the_first_layer(built.model, base, batch, length, models.llm.hidden)
        estimate = batch * length * llm_layer_activation_bytes(
            models.llm, config.model.lora.target_modules, config.model.lora.r, stage.lora, 0.0, 4)
        assert estimate == saved == {"s1": 515_840, "s2": 697_600, "s3": 697_600}[stage.name]


def test_plan_reads_the_real_hub_layouts(standins, tiny_world):
    """The real-shaped stand-ins as the hub ships them: CXR-BERT's custom config and tokenizer class,
    Vicuna's sentencepiece-only tokenizer; the manifest is tokenised with both."""
    config = load_config("mimic_cxr/s2d_align", [
        f"model.vision.name_or_path={standins['vision']}", f"model.text.name_or_path={standins['text']}",
        f"model.llm.name_or_path={standins['llm']}"])
    result = plan(config, manifest=tiny_world.manifest, gpu_memory_gib=80)
    assert result.parameters == {"vision": 86_580_480, "text": 108_891_648, "llm": 6_738_415_616 - 30 * 202_383_360,
                                 "lora": 2 * 2_498_560, "connector": 55_242_752}
    assert [s.trainable_total for s in result.stages] == [18_501_632, 18_501_632 * 2 - 131_072 + 2 * 2_498_560,
                                                         18_501_632 * 3 - 2 * 131_072 + 2 * 2_498_560]
    assert result.train_samples == 16


# --------------------------------------------------------------------------- each term, exactly


def counted_apart(run_forward):
    """FLOPs that torch counts in ``run_forward()`` and in the backward of the sum of what it returns,
    and that output."""
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as forward:
        out = run_forward()
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as backward:
        out.sum().backward()
    return forward.get_total_flops(), backward.get_total_flops(), out


@pytest.mark.parametrize("kind, expected", [
    ("sma", (22_784, 41_088, 4)), ("sma_unshared", (22_784, 41_088, 4)), ("mlp", (10_752, 17_472, 7)),
    ("mlp_msa", (40_320, 79_520, 7)), ("mlp_qformer", (80_640, 153_344, 4)),
])
def test_adapter_flops_are_what_torch_counts(kind, expected):
    """Each connector's forward and backward over one sample, to the FLOP: features carry no gradient,
    every connector parameter trains; every width differs, so a swapped dimension shows."""
    from types import SimpleNamespace

    from s2d_align.models.adapter import build_connector
    from s2d_align.training.costs import adapter_flops

    widths = dict(num_memory=4, memory_dim=16, hidden_size=24, num_heads=2, dropout=0.0, qformer_layers=2)
    torch.manual_seed(0)
    module = build_connector(kind, {"image": 12}, 20, **widths).train()
    features, mask = torch.randn(1, 7, 12), torch.ones(1, 7, dtype=torch.bool)
    forward, backward, tokens = counted_apart(lambda: module("image", features, mask)[0])
    estimate, emitted = adapter_flops(SimpleNamespace(kind=kind, **widths), 7, 12, 20)
    assert (estimate.forward, estimate.backward, emitted) == (forward, backward, tokens.shape[1]) == expected


def test_encoder_flops_are_what_torch_counts():
    """The frozen encoders' forward to the FLOP (patch convolution included, no pooler), no backward;
    the ViT's token count is CLS + registers + patches."""
    from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    from s2d_align.training.costs import encoder_flops, vision_tokens

    vit = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=3, image_size=28, patch_size=7)
    torch.manual_seed(0)
    for config, model_class, expected in ((Dinov2Config(**vit), Dinov2Model, (560_064, 17)),
                                          (Dinov2WithRegistersConfig(**vit, num_register_tokens=3),
                                           Dinov2WithRegistersModel, (650_496, 20))):
        model, shape = model_class(config).eval(), shape_from_config(config)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as counter:
            hidden = model(pixel_values=torch.randn(1, 3, 28, 28)).last_hidden_state
        flops = encoder_flops(shape, vision_tokens(shape))
        assert (flops.forward, vision_tokens(shape)) == (counter.get_total_flops(), hidden.shape[1]) == expected
        assert flops.backward == flops.recompute == 0
    config = BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40, vocab_size=50)
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as counter:
        model(input_ids=torch.zeros(1, 9, dtype=torch.long), attention_mask=torch.ones(1, 9, dtype=torch.long))
    flops = encoder_flops(shape_from_config(config), 9)
    assert flops.forward == counter.get_total_flops() == 167_616 and flops.backward == 0


def test_flops_totals():
    flops = Flops(forward=1.0, backward=2.0, recompute=4.0)
    assert (flops.model(), flops.executed()) == (3.0, 7.0)
    assert (flops + flops.scaled(10)).executed() == 77.0
    assert Flops().attention(3, 5, 2, grad=False).backward == 0.0


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "down_proj"], ["k_proj", "up_proj", "o_proj"]])
def test_layer_activations_with_lora_dropout_and_target_lists(targets):
    """The activation estimate against what autograd saves, with LoRA dropout on and off, frozen and
    trainable LoRA, three target lists, grouped-query attention and an MLP width that is not 2 x hidden.
    CPU dropout keeps its mask in float32, 3 bytes a value more than the 1-byte mask the estimate
    counts for CUDA (see ``llm_layer_activation_bytes``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from s2d_align.training.costs import llm_layer_activation_bytes, lora_targets

    config = LlamaConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=32)
    shape, batch, length = shape_from_config(config), 2, 5
    measured = {}
    for dropout in (0.0, 0.1):
        for trainable in (False, True):
            torch.manual_seed(0)
            llm = LlamaForCausalLM(config).requires_grad_(False)
            llm = get_peft_model(llm, LoraConfig(r=3, lora_alpha=6, lora_dropout=dropout, target_modules=targets,
                                                 task_type="CAUSAL_LM")).train()
            for name, parameter in llm.named_parameters():
                parameter.requires_grad_(trainable and "lora_" in name)
            saved = bytes_saved_by_the_first_layer(llm, llm.get_base_model().model, batch, length, 16)
            masks = batch * length * sum(d_in for d_in, _ in lora_targets(shape, targets)) if dropout else 0
            estimate = batch * length * llm_layer_activation_bytes(shape, targets, 3, trainable, dropout, 4)
            assert estimate + 3 * masks == saved, (dropout, trainable)
            measured[dropout, trainable] = saved
    expected = {
        "all-linear": [8_560, 12_280, 14_000, 20_280],
        "q_proj": [8_560, 11_160, 11_440, 14_680],
        "k_proj": [8_560, 10_200, 10_480, 12_760],
    }[targets if isinstance(targets, str) else targets[0]]
    assert list(measured.values()) == expected


def test_connector_parameter_groups_count_what_each_connector_builds():
    from types import SimpleNamespace

    from s2d_align.models.adapter import build_connector
    from s2d_align.training.costs import connector_parameter_groups

    widths = dict(num_memory=4, memory_dim=16, hidden_size=24, num_heads=2, dropout=0.1, qformer_layers=3)
    in_dims = {"image": 12, "reference": 10}
    for kind in ("sma", "sma_unshared", "mlp", "mlp_msa", "mlp_qformer"):
        groups = connector_parameter_groups(SimpleNamespace(kind=kind, **widths), in_dims, 20)
        module = build_connector(kind, dict(in_dims), 20, **widths)
        params = dict(module.named_parameters())
        assert groups == {g: sum(params[n].numel() for n in names) for g, names in module.parameter_groups().items()}
        assert sum(groups.values()) == numel(module)
    # one Q-Former block of width 16 over 12-wide features: self-attention 3*16*16+48 + 16*16+16,
    # cross-attention 16*16 + 2*16*12 + 48 + 16*16+16, feed-forward 16*64+64 + 64*16+16, three LayerNorms 3*32
    qformer = connector_parameter_groups(SimpleNamespace(kind="mlp_qformer", **widths), in_dims, 20)
    assert qformer["image"] - connector_parameter_groups(
        SimpleNamespace(kind="mlp_qformer", **{**widths, "qformer_layers": 2}), in_dims, 20)["image"] == 4_272


def test_read_shape_errors_name_the_key_and_the_first_line_of_the_cause(tmp_path, monkeypatch):
    from transformers import GPT2Config, PretrainedConfig

    from s2d_align.training.costs import read_shape

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match=r"^model\.llm\.name_or_path: model_type 'gpt2' is not in the cost model"):
        read_shape(str(tmp_path / "gpt2"), "model.llm.name_or_path")
    for error, reason in ((OSError("the first line\nthe second"), "(the first line)"), (OSError(), "(OSError)")):
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(PretrainedConfig, "get_config_dict", fail)
        with pytest.raises(ConfigError) as raised:
            read_shape("some/model", "model.text.name_or_path")
        assert str(raised.value) == (f"model.text.name_or_path='some/model': cannot read its config.json {reason}; "
                                     "pass model.text.name_or_path=<a local folder with config.json>")


def test_read_shape_never_runs_a_configs_remote_code(tmp_path):
    """A folder whose config names its own class through ``auto_map``: the cost model must refuse it,
    not import the module (which would write a marker file)."""
    from transformers import LlamaConfig

    from s2d_align.training.costs import read_shape
    from tests.conftest import plant_remote_code

    folder, marker = tmp_path / "custom", tmp_path / "ran"
    LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(folder)
    plant_remote_code(folder, marker, "Llama", "ForCausalLM", "AutoModelForCausalLM")
    with pytest.raises(ConfigError, match="cannot read its config.json"):
        read_shape(str(folder), "model.llm.name_or_path")
    assert not marker.exists()


@pytest.mark.parametrize("lora_trainable", [False, True])
def test_llm_flops_are_what_torch_counts(lora_trainable):
    """The LLM's forward and backward to the FLOP: frozen base weights pay input gradients only, LoRA
    (on a list of projections) a weight gradient when it trains, logits for the last report + 1 tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from s2d_align.training.costs import llm_flops, lora_targets

    config = LlamaConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50)
    shape, targets = shape_from_config(config), ["q_proj", "down_proj"]
    torch.manual_seed(0)
    llm = get_peft_model(LlamaForCausalLM(config).requires_grad_(False),
                         LoraConfig(r=3, lora_alpha=6, lora_dropout=0.0, target_modules=targets)).train()
    for name, parameter in llm.named_parameters():
        parameter.requires_grad_(lora_trainable and "lora_" in name)
    inputs = torch.randn(1, 11, 16, requires_grad=True)  # the adapter tokens carry a gradient
    forward, backward, _ = counted_apart(lambda: llm(inputs_embeds=inputs, logits_to_keep=5).logits)
    flops = llm_flops(shape, 11, 4, lora_targets(shape, targets), 3, lora_trainable, checkpointing=False)
    assert (flops.forward, flops.backward, flops.recompute) == (forward, backward, 0.0)
    assert (forward, backward) == {False: (153_376, 176_608), True: (153_376, 188_224)}[lora_trainable]
    checkpointed = llm_flops(shape, 11, 4, lora_targets(shape, targets), 3, lora_trainable, checkpointing=True)
    lm_head = 2.0 * 5 * 16 * 50
    assert checkpointed.recompute == checkpointed.forward - lm_head  # every decoder layer once more, not the head


@pytest.mark.parametrize("overrides", [
    {},
    {"attention_bias": True},
    {"mlp_bias": True},
    {"tie_word_embeddings": True},
    {"head_dim": 6},  # wider than hidden / heads
    {"num_key_value_heads": None},  # no grouped-query attention
])
def test_llama_parameter_counts_follow_every_option(overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{"hidden_size": 16, "intermediate_size": 40, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
                            "max_position_embeddings": 64, **overrides})
    shape = shape_from_config(config)
    with torch.device("meta"):
        assert parameter_count(shape) == numel(LlamaForCausalLM(config))
    assert (shape.model_type, shape.positions, shape.head_dim) == ("llama", 64, overrides.get("head_dim", 4))
    assert shape.kv_heads == (4 if "num_key_value_heads" in overrides else 2)


def test_mistral_and_a_one_channel_vit_with_registers_are_counted_exactly():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, MistralConfig, MistralForCausalLM

    mistral = MistralConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=1, vocab_size=30)
    vit = Dinov2WithRegistersConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                    image_size=28, patch_size=14, num_register_tokens=3, num_channels=1)
    with torch.device("meta"):
        assert parameter_count(shape_from_config(mistral)) == numel(MistralForCausalLM(mistral))
        assert parameter_count(shape_from_config(vit)) == numel(Dinov2WithRegistersModel(vit))
    assert (shape_from_config(vit).registers, shape_from_config(vit).channels) == (3, 1)


def test_what_the_cost_model_does_not_know_is_refused_by_name():
    from types import SimpleNamespace

    from transformers import Dinov2Config, GPT2Config

    from s2d_align.training.costs import adapter_flops, lora_targets

    with pytest.raises(ConfigError) as raised:
        shape_from_config(GPT2Config(n_layer=1, n_embd=8, n_head=2))
    assert str(raised.value) == "model: model_type 'gpt2' is not in the cost model (it knows llama, mistral, bert, dinov2)"
    with pytest.raises(ConfigError) as raised:
        shape_from_config(Dinov2Config(use_swiglu_ffn=True), "model.vision.name_or_path")
    assert str(raised.value) == "model.vision.name_or_path: DINOv2 with a SwiGLU feed-forward is not in the cost model"
    llm = shape_from_config(real_configs(2)[2])
    with pytest.raises(ConfigError) as raised:
        lora_targets(llm, ["q_proj", "lm_head", "qkv"])
    assert str(raised.value) == ("model.lora.target_modules: ['lm_head', 'qkv'] are not projections of llama "
                                 "(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])")
    with pytest.raises(ConfigError) as raised:
        adapter_flops(SimpleNamespace(kind="perceiver", memory_dim=8, hidden_size=8), 4, 8, 8)
    assert str(raised.value) == "model.connector.kind: 'perceiver' is not in the cost model"


FORMATTED = [
    'base models: vision {vision} (28,128 params, 1 layers, 17 tokens/image), text {text} (28,032), LLM {llm} (110,272, 2 layers, float32)',
    'connector sma: 16,384 params; LoRA r=4: 8,704 params',
    "lengths from the recipe's caps (no manifest): every sample at its longest",
    'effective batch 4 (train.batch_size x train.grad_accum_steps) on 3 GPU(s) of 0.001 GiB, planned to 90% of it; time at 40% MFU of 989 TFLOP/s (default: H100 SXM dense bf16; A100: 312)',
    '',
    'stage s1 [image]',
    '  trainable parameters  5,504 (memory 64, image 5,440)',
    '  LLM sequence (tokens) p50 68  p95 68  max 68  (prompt 7 + adapter tokens + instruction 9 + report)',
    '  FLOPs per sample      mean 36.78 MFLOP, longest 36.78 MFLOP executed (longest, model FLOPs: vision 917632 FLOP, text 0 FLOP, adapters 178176 FLOP, llm 35.68 MFLOP)',
    '  peak memory, batch 4, checkpointing: 2.5 MiB (weights 0.7 MiB, gradients 0.0 MiB, adamw 0.0 MiB, activations 1.0 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  peak memory, batch 4, no checkpointing: 3.2 MiB (weights 0.7 MiB, gradients 0.0 MiB, adamw 0.0 MiB, activations 1.7 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  recommended           nothing fits: even one sample exceeds 0.001 GiB',
    '  time                  0.00 h per epoch (1,000 samples)',
    '',
    'stage s2 [image+reference]',
    '  trainable parameters  19,648 (memory 64, image 5,440, reference 5,440, lora 8,704)',
    '  LLM sequence (tokens) p50 72  p95 72  max 72  (prompt 7 + adapter tokens + instruction 9 + report)',
    '  FLOPs per sample      mean 41.40 MFLOP, longest 41.40 MFLOP executed (longest, model FLOPs: vision 917632 FLOP, text 655360 FLOP, adapters 436224 FLOP, llm 39.39 MFLOP)',
    '  peak memory, batch 4, checkpointing: 3.0 MiB (weights 0.7 MiB, gradients 0.1 MiB, adamw 0.1 MiB, activations 1.3 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  peak memory, batch 4, no checkpointing: 4.1 MiB (weights 0.7 MiB, gradients 0.1 MiB, adamw 0.1 MiB, activations 2.4 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  recommended           nothing fits: even one sample exceeds 0.001 GiB',
    '  time                  0.00 h per epoch (1,000 samples)',
    '',
    'stage s3 [image+reference+key_phrases]',
    '  trainable parameters  25,088 (memory 64, image 5,440, reference 5,440, key_phrases 5,440, lora 8,704)',
    '  LLM sequence (tokens) p50 76  p95 76  max 76  (prompt 7 + adapter tokens + instruction 9 + report)',
    '  FLOPs per sample      mean 44.89 MFLOP, longest 44.89 MFLOP executed (longest, model FLOPs: vision 917632 FLOP, text 1.31 MFLOP, adapters 694272 FLOP, llm 41.97 MFLOP)',
    '  peak memory, batch 4, checkpointing: 3.2 MiB (weights 0.7 MiB, gradients 0.1 MiB, adamw 0.2 MiB, activations 1.4 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  peak memory, batch 4, no checkpointing: 4.3 MiB (weights 0.7 MiB, gradients 0.1 MiB, adamw 0.2 MiB, activations 2.5 MiB, logits 0.7 MiB, encoders+adapters 0.1 MiB)',
    '  recommended           nothing fits: even one sample exceeds 0.001 GiB',
    '  time                  0.00 h per epoch (1,000 samples)',
]
"""``s2d-align plan``'s report of the tiny models at the recipe's caps, 3 GPUs of 0.001 GiB, 1,000 samples."""


def test_the_report_says_every_figure_of_every_stage(tiny_world):
    from s2d_align.training.plan import format_plan

    text = format_plan(plan(tiny_world.config(), gpus=3, gpu_memory_gib=0.001, train_samples=1000))
    for name, folder in tiny_world.models.items():
        text = text.replace(str(folder), "{" + name + "}")
    assert text.split("\n") == FORMATTED
    with_layout = format_plan(plan(tiny_world.config(), manifest=tiny_world.manifest, gpu_memory_gib=1))
    assert [line for line in with_layout.split("\n") if line.startswith("  recommended")] == [
        f"  recommended           train.batch_size=4 train.grad_accum_steps=1 model.llm.gradient_checkpointing=false"
        f" on 1 GPU(s): {size} MiB per device" for size in ("2.1", "2.7", "3.0")]
    assert with_layout.count("  time                  0.00 h per epoch (16 samples)") == 3
    without_samples = format_plan(plan(tiny_world.config(), gpu_memory_gib=1)).split("\n")
    assert without_samples.count("  time                  pass --manifest or --train-samples for hours per epoch") == 3


def test_the_plan_of_the_tiny_models_from_their_manifest(tiny_world):
    """Pinned: every stage's lengths, FLOPs, memory items and layout for the manifest's 16 training studies.
    (Each term is checked against torch above; this pins how the plan puts them together.)"""
    from s2d_align.training.plan import Layout

    result = plan(tiny_world.config(), manifest=tiny_world.manifest, gpu_memory_gib=1)
    expected = {
        "s1": ({"p50": 36, "p95": 39, "max": 39}, 17_124_256, 19_080_064,
               {"vision": 917_632, "text": 0, "adapters": 178_176, "llm": 17_984_256},
               {"weights": 766_080, "gradients": 22_016, "adamw": 44_032, "activations": 582_816, "logits": 280_320,
                "encoders+adapters": 71_680}, 2_190_016),
        "s2": ({"p50": 40, "p95": 43, "max": 43}, 20_152_160, 22_524_032,
               {"vision": 917_632, "text": 444_544, "adapters": 391_296, "llm": 20_770_560},
               {"weights": 766_080, "gradients": 78_592, "adamw": 157_184, "activations": 837_984, "logits": 280_320,
                "encoders+adapters": 94_720}, 2_876_736),
        "s3": ({"p50": 44, "p95": 47, "max": 47}, 22_570_064, 25_037_696,
               {"vision": 917_632, "text": 640_256, "adapters": 544_512, "llm": 22_935_296},
               {"weights": 766_080, "gradients": 100_352, "adamw": 200_704, "activations": 915_936, "logits": 280_320,
                "encoders+adapters": 111_616}, 3_098_432),
    }
    for stage in result.stages:
        sequence, mean, longest, parts, memory, peak = expected[stage.name]
        assert stage.sequence == sequence
        assert (stage.flops["mean"].executed(), stage.flops["max"].executed()) == (mean, longest)
        assert stage.parts == parts and stage.memory["checkpointing"] == memory
        assert sum(stage.memory["no checkpointing"].values()) == peak
        assert stage.layout == Layout(4, 1, False, peak)
        assert stage.hours_per_epoch == pytest.approx(16 * mean / (0.4 * 989e12) / 3600, rel=1e-14, abs=0)
        assert stage.memory["no checkpointing"]["activations"] > memory["activations"]  # what checkpointing saves
        assert memory["gradients"] == 4 * stage.trainable_total and memory["adamw"] == 8 * stage.trainable_total
    assert (result.train_samples, result.effective_batch) == (16, 4)
    assert result.source == f"{tiny_world.manifest} (16 training studies)"


def test_plan_settings_are_checked_and_devices_share_the_batch(tiny_world):
    for settings in ({"gpus": 0}, {"gpu_memory_gib": 0}, {"mfu": 0}, {"mfu": 1.01}, {"peak_tflops": 0}):
        with pytest.raises(ConfigError) as raised:
            plan(tiny_world.config(), **settings)
        assert str(raised.value) == "plan: --gpus must be >= 1, --gpu-memory and --peak-tflops > 0, --mfu in (0, 1]"
    assert plan(tiny_world.config(), mfu=1.0).mfu == 1.0 and plan(tiny_world.config(), peak_tflops=0.5).peak_tflops == 0.5
    assert plan(tiny_world.config()).gpu_memory_gib == 80.0  # an 80 GB card unless told
    for key in ("vision", "text", "llm"):  # each unreadable base model is named by its own key
        with pytest.raises(ConfigError, match=rf"^model\.{key}\.name_or_path='/nowhere': cannot read its config"):
            plan(tiny_world.config(f"model.{key}.name_or_path=/nowhere"))
    three = plan(tiny_world.config(), gpus=3, gpu_memory_gib=1)  # ceil(4 / 3) = 2 samples per device
    assert all(s.layout.micro_batch * s.layout.accumulation == 2 for s in three.stages)


def test_recommend_at_the_edges():
    from s2d_align.training.plan import Layout

    memory = lambda b, ckpt: 10.0 + b * (1.0 if ckpt else 4.0)  # noqa: E731
    only_plain = lambda b, ckpt: 100.0 if ckpt else 10.0 + 4.0 * b  # noqa: E731
    assert recommend(3, 22.0, memory) == Layout(3, 1, False, 22.0)  # fewer than 4 per device: all of them
    assert recommend(16, 14.5, memory) == Layout(4, 4, True, 14.0)  # no-checkpointing fits nowhere at 4 or more
    assert recommend(16, 11.5, memory) == Layout(1, 16, True, 11.0)  # checkpointing fits at one sample only
    assert recommend(16, 14.5, only_plain) == Layout(1, 16, False, 14.0)  # the last resort


def test_manifest_lengths_are_the_collators(tiny_world):
    """Reports (capped, EOS included) and references as the collator pads them, study by study;
    key phrases at their largest draw."""
    from s2d_align.data.dataset import KEY_PHRASE_SEPARATOR
    from s2d_align.models.model import build_model
    from s2d_align.training.plan import load_tokenizer, manifest_lengths, read_models

    config = tiny_world.config("data.max_report_tokens=15", "model.text.max_length=12")
    models, llm_tokenizer = read_models(config)
    text_tokenizer = load_tokenizer(config.model.text.name_or_path, "model.text.name_or_path", bert_family_check=True)
    assert type(text_tokenizer).__name__ == "BertTokenizer"
    lengths = manifest_lengths(config, tiny_world.manifest, llm_tokenizer, text_tokenizer)
    torch.manual_seed(0)
    built = build_model(config.model)
    assert (models.prompt_tokens, models.instruction_tokens) == (len(built.model.prompt_ids),
                                                                len(built.model.instruction_ids))
    studies = read_manifest(tiny_world.manifest)
    train = [s for s in studies if s.split == "train"]
    dataset = TrainingDataset(train, {s.id: s.findings for s in studies}, tiny_world.manifest, built.preprocess, 1,
                              config.data.max_key_phrases)
    collate = Collator(built.tokenizers.llm, built.tokenizers.text, 15, config.model.text.max_length)
    assert len(lengths) == len(train) == 16
    reports = [int(collate([dataset[i]])["report_mask"].sum()) for i in range(len(train))]
    references = [int(collate([dataset[i]])["reference_mask"].sum()) for i in range(len(train))]
    assert [x.report for x in lengths] == reports and max(reports) == 15 and min(reports) < 15  # some meet the cap
    assert [x.reference for x in lengths] == references and max(references) == 12  # capped as the collator caps
    phrases = [KEY_PHRASE_SEPARATOR.join(k.text for k in s.key_phrases[: config.data.max_key_phrases]) for s in train]
    assert [x.key_phrases for x in lengths] == [min(len(i), 12) for i in text_tokenizer(phrases).input_ids]


def test_plan_inputs_fail_in_one_line(tiny_world, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from s2d_align.training.plan import load_tokenizer, manifest_lengths, read_models

    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as raised:
        load_tokenizer(str(missing), "model.llm.name_or_path")
    message = str(raised.value)
    assert message.startswith(f"model.llm.name_or_path={str(missing)!r}: cannot load its tokenizer (")
    assert message.endswith("; pass model.llm.name_or_path=<a local folder with the tokenizer files>")
    assert "\n" not in message

    def fail(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fail)
    with pytest.raises(ConfigError, match=r": cannot load its tokenizer \(OSError\); "):
        load_tokenizer(str(tiny_world.models["llm"]), "model.llm.name_or_path")
    monkeypatch.undo()
    only_val = tmp_path / "val.jsonl"
    only_val.write_text("".join(line for line in tiny_world.manifest.read_text().splitlines(keepends=True)
                                if '"split": "val"' in line))
    config = tiny_world.config()
    models, llm_tokenizer = read_models(config)
    with pytest.raises(ConfigError, match=r"val\.jsonl: no study in the train split$"):
        manifest_lengths(config, only_val, llm_tokenizer, llm_tokenizer)


def test_units_and_percentiles():
    from s2d_align.training.plan import GIB, _gib, _tera, percentile

    assert [_tera(x) for x in (2.5e12, 1e12, 3e9, 1e9, 4e6, 1e6, 999.0)] == [
        "2.50 TFLOP", "1.00 TFLOP", "3.00 GFLOP", "1.00 GFLOP", "4.00 MFLOP", "1.00 MFLOP", "999 FLOP"]
    assert [_gib(x) for x in (2 * GIB, GIB / 10, GIB / 10 - 2**20)] == ["2.0 GiB", "0.1 GiB", "101.4 MiB"]
    ordered = list(range(1, 11))
    assert [percentile(ordered, q) for q in (0, 10, 50, 95, 100)] == [1, 1, 5, 10, 10]
    assert percentile([7], 50) == 7
    assert [percentile(list(range(1, 1001)), q) for q in (50, 95)] == [500, 950]


def test_a_cxr_bert_like_text_folder_is_tokenised_as_bert(tiny_world, tmp_path):
    """CXR-BERT's layout: ``vocab.txt`` and a custom tokenizer class, which AutoTokenizer cannot build
    without remote code (there is no ``tokenizer.json`` to fall back on)."""
    import json
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "cxr_bert"
    shutil.copytree(tiny_world.models["text"], folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    (folder / "tokenizer.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="cxr-bert", architectures=["CXRBertModel"],
                  auto_map={"AutoTokenizer": ["tokenization_cxrbert.CXRBertTokenizer", None]})
    (folder / "config.json").write_text(json.dumps(config))
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "CXRBertTokenizer"}))
    with pytest.raises(ValueError):
        AutoTokenizer.from_pretrained(folder)
    plain = plan(tiny_world.config(), manifest=tiny_world.manifest, gpu_memory_gib=1)
    custom = plan(tiny_world.config(f"model.text.name_or_path={folder}"), manifest=tiny_world.manifest, gpu_memory_gib=1)
    assert [s.sequence for s in custom.stages] == [s.sequence for s in plain.stages]
    assert [s.flops["mean"].executed() for s in custom.stages] == [s.flops["mean"].executed() for s in plain.stages]


def test_memory_follows_mixed_precision_views_the_connector_and_a_checkpointed_layout(tiny_world):
    """Pinned memory items of stage s3 under settings the tiny recipe does not use, and a budget where
    only checkpointing fits s3 (its FLOPs then include the recomputation)."""
    base = plan(tiny_world.config(), gpu_memory_gib=1).stages[-1].memory["no checkpointing"]
    mixed = plan(tiny_world.config("train.mixed_precision=bf16"), gpu_memory_gib=1).stages[-1].memory["no checkpointing"]
    assert (base["activations"], mixed["activations"]) == (2_650_880.0, 1_488_384.0)  # 2-byte activations under bf16
    assert (base["logits"], mixed["logits"]) == (686_784.0, 600_936.0)
    assert (base["encoders+adapters"], mixed["encoders+adapters"]) == (126_976.0, 100_864.0)
    views = plan(tiny_world.config("data.max_images=2"), gpu_memory_gib=1).stages[-1].memory["no checkpointing"]
    assert views["encoders+adapters"] == 187_392.0 and views["activations"] == base["activations"]  # SMA: 4 tokens
    mlp = plan(tiny_world.config("model.connector.kind=mlp"), gpu_memory_gib=1).stages[-1].memory["no checkpointing"]
    assert (mlp["encoders+adapters"], mlp["activations"]) == (318_464.0, 5_022_720.0)  # a token per feature
    tight = plan(tiny_world.config(), gpu_memory_gib=0.003)
    assert [(s.layout.micro_batch, s.layout.checkpointing) for s in tight.stages] == [(4, True), (2, True), (2, True)]
    roomy = plan(tiny_world.config(), gpu_memory_gib=1).stages[-1]
    assert tight.stages[-1].flops["mean"].recompute > 0 == roomy.flops["mean"].recompute
    assert tight.stages[-1].flops["max"].recompute > 0 == roomy.flops["max"].recompute


def test_a_folder_without_tokenizer_files_is_named_by_its_key(tiny_world, tmp_path):
    import shutil

    for key in ("llm", "text"):
        folder = tmp_path / key
        folder.mkdir()
        shutil.copy(tiny_world.models[key] / "config.json", folder / "config.json")  # shapes readable, no tokenizer
        with pytest.raises(ConfigError) as raised:
            plan(tiny_world.config(f"model.{key}.name_or_path={folder}"), manifest=tiny_world.manifest)
        assert str(raised.value).startswith(f"model.{key}.name_or_path={str(folder)!r}: cannot load its tokenizer (")
        assert str(raised.value).endswith(f"; pass model.{key}.name_or_path=<a local folder with the tokenizer files>")
