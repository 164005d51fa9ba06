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
        parameters = {p.untyped_storage().data_ptr() for p in built.model.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor):
            pointer = tensor.untyped_storage().data_ptr()
            if pointer not in parameters:
                saved[pointer] = max(saved.get(pointer, 0), tensor.untyped_storage().nbytes())
            return tensor

        hidden = torch.randn(batch, length, models.llm.hidden, requires_grad=True)
        positions = torch.arange(length).expand(batch, length)
        rotary = base.rotary_emb(hidden, positions)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            base.layers[0](hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        estimate = batch * length * llm_layer_activation_bytes(
            models.llm, config.model.lora.target_modules, config.model.lora.r, stage.lora, 0.0, 4)
        assert estimate == sum(saved.values()) == {"s1": 515_840, "s2": 697_600, "s3": 697_600}[stage.name]


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
