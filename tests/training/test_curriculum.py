"""The exact parameters each stage trains (SPEC: S1 M+phi_v; S2 +phi_r+LoRA; S3 +phi_k)."""

import pytest
import torch

from s2d_align.config import StageConfig, load_config
from s2d_align.training.curriculum import apply_stage, trainable_groups, trainable_names

ADAPTER_PARAMS = [
    "attention.q_proj_weight", "attention.k_proj_weight", "attention.v_proj_weight", "attention.in_proj_bias",
    "attention.out_proj.weight", "attention.out_proj.bias",
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
    "norm.weight", "norm.bias",
]
LORA_MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LORA = {
    f"llm.base_model.model.model.layers.{layer}.{module}.lora_{ab}.default.weight"
    for layer in (0, 1) for module in LORA_MODULES for ab in "AB"
}


def adapter(modality):
    return {f"connector.adapters.{modality}.{name}" for name in ADAPTER_PARAMS}


S1 = {"connector.memory"} | adapter("image")
S2 = S1 | adapter("reference") | LORA
S3 = S2 | adapter("key_phrases")


def test_paper_curriculum_trains_exactly(tiny_built):
    stages = {s.name: s for s in load_config(None).train.stages}
    model = tiny_built.model
    assert trainable_names(model, stages["s1"]) == S1
    assert trainable_names(model, stages["s2"]) == S2
    assert trainable_names(model, stages["s3"]) == S3
    assert len(LORA) == 28


@pytest.mark.parametrize(
    "contexts, lora, groups",
    [
        (("image+key_phrases",), True, {"memory", "image", "key_phrases", "lora"}),  # S1 -> S3 ablation
        (("image", "image+reference", "image+reference+key_phrases"), True,
         {"memory", "image", "reference", "key_phrases", "lora"}),  # joint ablation
    ],
)
def test_ablation_stages(contexts, lora, groups):
    assert trainable_groups(StageConfig(name="x", contexts=contexts, lora=lora)) == groups


def test_apply_stage_freezes_everything_else_and_gradients_agree(tiny_world, tiny_built):
    from tests.models.test_model import _batch

    model = tiny_built.model
    stage = StageConfig(name="s2", contexts=("image+reference",), lora=True)
    params = apply_stage(model, stage)
    try:
        assert {n for n, p in model.named_parameters() if p.requires_grad} == S2
        assert len(params) == len(S2)
        model.zero_grad(set_to_none=True)
        sums, counts = model(_batch(tiny_world, tiny_built), ("image", "reference"))
        (sums.sum() / counts.sum()).backward()
        assert {n for n, p in model.named_parameters() if p.grad is not None} == S2
        nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        # LoRA A's gradient is exactly zero while B is still zero; every other trainable part moves.
        assert nonzero == S2 - {n for n in LORA if "lora_A" in n}
        frozen = [p for n, p in model.named_parameters() if n not in S2]
        assert all(p.grad is None for p in frozen)
    finally:
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(False)


@pytest.mark.parametrize("kind", ["mlp", "mlp_qformer", "mlp_msa", "sma_unshared"])
def test_every_connector_trains_only_the_adapters_of_its_contexts(tiny_world, kind):
    from s2d_align.models.model import build_model
    from tests.models.test_model import _batch

    built = build_model(tiny_world.config(f"model.connector.kind={kind}").model)
    model = built.model
    stages = {s.name: s for s in load_config(None).train.stages}
    names = {n for n, _ in model.named_parameters()}
    lora = {n for n in names if "lora_" in n}

    def adapters(*modalities):
        return {n for n in names for m in modalities if n.startswith(f"connector.adapters.{m}.")
                or n == f"connector.memories.{m}"}

    assert trainable_names(model, stages["s1"]) == adapters("image")
    assert trainable_names(model, stages["s2"]) == adapters("image", "reference") | lora
    assert trainable_names(model, stages["s3"]) == adapters("image", "reference", "key_phrases") | lora
    # And the stage-3 loss reaches every parameter that trains.
    params = apply_stage(model, stages["s3"])
    sums, counts = model(_batch(tiny_world, built), ("image", "reference", "key_phrases"))
    (sums.sum() / counts.sum()).backward()
    assert all(p.grad is not None for p in params)
    assert torch.isfinite(sums).all()


def test_a_stage_without_contexts_is_refused_by_name():
    from s2d_align.training.curriculum import stage_contexts

    with pytest.raises(ValueError, match="stage 's2' lists no contexts"):
        stage_contexts(StageConfig(name="s2", contexts=(), lora=True))
