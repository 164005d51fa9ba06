import pytest
import torch

from s2d_align.models.adapter import SMA, build_connector

DIMS = {"image": 12, "reference": 10, "key_phrases": 10}
ADAPTER_PARAMS = [
    "attention.q_proj_weight", "attention.k_proj_weight", "attention.v_proj_weight", "attention.in_proj_bias",
    "attention.out_proj.weight", "attention.out_proj.bias",
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
    "norm.weight", "norm.bias",
]


def _sma(shared=True):
    torch.manual_seed(0)
    return SMA(DIMS, out_dim=20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8, dropout=0.0, shared=shared)


def test_each_adapter_emits_num_memory_tokens_of_llm_width():
    sma = _sma()
    tokens, mask = sma("image", torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool))
    assert tokens.shape == (3, 5, 20) and mask.shape == (3, 5) and mask.all()
    tokens, _ = sma("reference", torch.randn(3, 9, 10), torch.ones(3, 9, dtype=torch.bool))
    assert tokens.shape == (3, 5, 20)


def test_padded_features_are_ignored():
    sma = _sma().eval()
    features = torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    changed = features.clone()
    changed[0, 4:] = 100.0  # garbage in the padding of study 0
    a, _ = sma("image", features, mask)
    b, _ = sma("image", changed, mask)
    torch.testing.assert_close(a, b)
    unmasked, _ = sma("image", changed, torch.ones_like(mask))
    assert not torch.allclose(a[0], unmasked[0])  # the same garbage, once visible, does change the tokens


def test_one_memory_bank_is_shared_by_all_adapters():
    sma = _sma(shared=True)
    assert sma.memory_for("image") is sma.memory_for("reference") is sma.memory_for("key_phrases")
    groups = sma.parameter_groups()
    assert groups["memory"] == ["memory"]
    assert groups["image"] == [f"adapters.image.{n}" for n in ADAPTER_PARAMS]
    everything = {n for n, _ in sma.named_parameters()}
    assert set().union(*map(set, groups.values())) == everything


def test_unshared_memory_gives_each_adapter_its_own_bank():
    sma = _sma(shared=False)
    assert sma.memory_for("image") is not sma.memory_for("reference")
    groups = sma.parameter_groups()
    assert groups["memory"] == []
    assert groups["reference"] == [f"adapters.reference.{n}" for n in ADAPTER_PARAMS] + ["memories.reference"]


def test_memory_gradient_collects_from_every_modality():
    sma = _sma()
    total = sum(
        sma(m, torch.randn(2, 4, d), torch.ones(2, 4, dtype=torch.bool))[0].pow(2).mean() for m, d in DIMS.items()
    )
    total.backward()
    assert sma.memory.grad is not None and sma.memory.grad.abs().sum() > 0


def test_unknown_connector_kind():
    with pytest.raises(ValueError, match="unknown connector kind 'qformer'"):
        build_connector("qformer", DIMS, 20)


def test_every_connector_kind_the_config_accepts_builds():
    from typing import get_args, get_type_hints

    from s2d_align.config import ConnectorConfig

    for kind in get_args(get_type_hints(ConnectorConfig)["kind"]):
        connector = build_connector(kind, DIMS, 20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8, dropout=0.0,
                                    qformer_layers=2)
        assert set(connector.parameter_groups()) == {"memory", *DIMS}


TABLE_4 = ("mlp", "mlp_qformer", "mlp_msa")


def _connector(kind):
    torch.manual_seed(0)
    return build_connector(kind, DIMS, 20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8, dropout=0.0,
                           qformer_layers=2).eval()


@pytest.mark.parametrize("kind, tokens_out", [("mlp", 7), ("mlp_qformer", 5), ("mlp_msa", 7)])
def test_table_4_connectors_shapes_and_masks(kind, tokens_out):
    connector = _connector(kind)
    features = torch.randn(2, 7, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7], dtype=torch.bool)
    tokens, out_mask = connector("image", features, mask)
    assert tokens.shape == (2, tokens_out, 20) and out_mask.shape == (2, tokens_out)
    # Token-wise connectors pass the padding through; the Q-Former's queries are always real.
    assert torch.equal(out_mask, mask) if tokens_out == 7 else out_mask.all()
    changed = features.clone()
    changed[0, 5:] = 100.0  # garbage in study 0's padding changes none of its real tokens
    again, _ = connector("image", changed, mask)
    keep = out_mask[0]
    torch.testing.assert_close(again[0][keep], tokens[0][keep])


@pytest.mark.parametrize("kind", TABLE_4)
def test_table_4_connectors_have_no_memory_and_one_group_per_modality(kind):
    connector = _connector(kind)
    groups = connector.parameter_groups()
    assert groups["memory"] == []
    everything = {n for n, _ in connector.named_parameters()}
    assert set().union(*map(set, groups.values())) == everything
    for modality in DIMS:
        assert groups[modality] and all(n.startswith(f"adapters.{modality}.") for n in groups[modality])
    if kind == "mlp_qformer":
        assert "adapters.image.queries" in groups["image"]


def test_the_mlp_reads_the_memory_plus_what_it_attended():
    # Documented: tokens = LayerNorm(MLP(M + attended)). With the attention's output projection at
    # zero, attended is 0 and the tokens are LayerNorm(MLP(M)): one distinct token per memory slot.
    sma = _sma().eval()
    adapter = sma.adapters["image"]
    with torch.no_grad():
        adapter.attention.out_proj.weight.zero_()
        adapter.attention.out_proj.bias.zero_()
    tokens, _ = sma("image", torch.randn(2, 7, 12), torch.ones(2, 7, dtype=torch.bool))
    expected = adapter.norm(adapter.mlp(sma.memory)).expand(2, -1, -1)
    torch.testing.assert_close(tokens, expected)
    assert torch.cdist(tokens[0], tokens[0]).triu(1)[torch.ones(5, 5).triu(1).bool()].min() > 0.1


@pytest.mark.parametrize("shared", [True, False])
def test_memory_starts_at_unit_scale(shared):
    torch.manual_seed(0)
    sma = SMA(DIMS, out_dim=20, num_memory=64, memory_dim=32, hidden_size=24, num_heads=8, dropout=0.0, shared=shared)
    banks = [sma.memory] if shared else list(sma.memories.values())
    for bank in banks:  # N(0, 1), as DETR's queries: 2048 draws give a std within a few percent of 1
        assert 0.93 < bank.std().item() < 1.07 and abs(bank.mean().item()) < 0.07


# --------------------------------------------------------------------------- each connector against its equations
#
# The references below recompute every documented equation from the modules' weights, with the attention
# written out by hand (batch first, per head, masked keys), and every parameter drawn at random (LayerNorms
# included, so using one norm in place of another shows). A removed residual, a sign, a dropped activation
# or block, or attention across the batch then changes the numbers.


def _randomised(module):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


def _attention(module, queries, keys, values, key_mask=None):
    """nn.MultiheadAttention's output, by hand from its weights: softmax(Q K^T / sqrt(d)) V, per head, then out_proj."""
    width, heads = module.embed_dim, module.num_heads
    if module.in_proj_weight is not None:
        wq, wk, wv = module.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    bq, bk, bv = module.in_proj_bias.chunk(3)

    def split(x, w, b):  # (B, L, d_in) -> (B, heads, L, width / heads)
        return (x @ w.T + b).unflatten(-1, (heads, width // heads)).transpose(1, 2)

    q, k, v = split(queries, wq, bq), split(keys, wk, bk), split(values, wv, bv)
    scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
    return out @ module.out_proj.weight.T + module.out_proj.bias


def _norm(module, x):
    return torch.nn.functional.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def _linear(module, x):
    return x @ module.weight.T + module.bias


def _three_layer(mlp, x):  # Linear-GELU-Linear-GELU-Linear (paper, Eq. 7)
    gelu = torch.nn.functional.gelu
    return _linear(mlp[4], gelu(_linear(mlp[2], gelu(_linear(mlp[0], x)))))


def _two_layer(mlp, x):  # LLaVA-1.5's projector: Linear-GELU-Linear
    return _linear(mlp[2], torch.nn.functional.gelu(_linear(mlp[0], x)))


FEATURES = torch.randn(3, 6, 12, generator=torch.Generator().manual_seed(2))
MASK = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("kind", ["sma", "sma_unshared"])
def test_sma_is_layernorm_of_the_mlp_of_memory_plus_its_cross_attention(kind):
    sma = _randomised(_connector(kind))
    tokens, mask = sma("image", FEATURES, MASK)
    adapter = sma.adapters["image"]
    memory = (sma.memory if kind == "sma" else sma.memories["image"]).expand(3, -1, -1)  # (B, n_m, d_m)
    attended = _attention(adapter.attention, memory, FEATURES, FEATURES, MASK)
    torch.testing.assert_close(tokens, _norm(adapter.norm, _three_layer(adapter.mlp, memory + attended)))
    assert mask.dtype == torch.bool and mask.shape == (3, 5) and mask.all()
    if kind == "sma_unshared":  # another modality reads its own bank
        other = sma.adapters["reference"]
        text = torch.randn(3, 4, 10)
        bank = sma.memories["reference"].expand(3, -1, -1)
        expected = _norm(other.norm, _three_layer(other.mlp, bank + _attention(other.attention, bank, text, text)))
        torch.testing.assert_close(sma("reference", text, torch.ones(3, 4, dtype=torch.bool))[0], expected)


def test_mlp_connector_is_the_two_layer_projector_per_token():
    connector = _randomised(_connector("mlp"))
    tokens, mask = connector("image", FEATURES, MASK)
    torch.testing.assert_close(tokens, _two_layer(connector.adapters["image"], FEATURES))
    assert torch.equal(mask, MASK)


def test_qformer_is_its_blocks_then_the_projector():
    connector = _randomised(_connector("mlp_qformer"))
    tokens, mask = connector("image", FEATURES, MASK)
    adapter = connector.adapters["image"]
    assert len(adapter.blocks) == 2  # qformer_layers
    queries = adapter.queries.expand(3, -1, -1)
    for index in range(2):
        block = adapter.blocks[index]  # post-norm, as BLIP-2: self-attention, cross-attention, feed-forward
        queries = _norm(block.norms[0], queries + _attention(block.self_attention, queries, queries, queries))
        queries = _norm(block.norms[1], queries + _attention(block.cross_attention, queries, FEATURES, FEATURES, MASK))
        queries = _norm(block.norms[2], queries + _two_layer(block.feed_forward, queries))
    torch.testing.assert_close(tokens, _two_layer(adapter.projector, queries))
    assert mask.dtype == torch.bool and mask.shape == (3, 5) and mask.all()
    assert len(adapter.blocks[0].norms) == 3


def test_msa_is_layernorm_of_the_mlp_of_the_features_plus_their_self_attention():
    connector = _randomised(_connector("mlp_msa"))
    tokens, mask = connector("image", FEATURES, MASK)
    adapter = connector.adapters["image"]
    x = _linear(adapter.inputs, FEATURES)
    expected = _norm(adapter.norm, _three_layer(adapter.mlp, x + _attention(adapter.attention, x, x, x, MASK)))
    torch.testing.assert_close(tokens[MASK], expected[MASK])  # padded positions carry no meaning
    assert torch.equal(mask, MASK)


@pytest.mark.parametrize("kind", ["sma", "sma_unshared", "mlp_qformer", "mlp_msa"])
def test_the_recipes_dropout_reaches_every_attention(kind):
    torch.manual_seed(0)
    connector = build_connector(kind, DIMS, 20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8,
                                dropout=0.125, qformer_layers=2)
    attentions = [m for m in connector.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert len(attentions) == {"sma": 3, "sma_unshared": 3, "mlp_qformer": 12, "mlp_msa": 3}[kind]
    assert all(a.dropout == 0.125 for a in attentions)


def test_build_connector_shares_the_memory_for_sma_only_and_takes_the_recipes_qformer_layers():
    # model.py passes every connector setting, qformer_layers included, whatever the kind.
    settings = dict(num_memory=5, memory_dim=16, hidden_size=24, num_heads=8, dropout=0.0, qformer_layers=3)
    shared, unshared = build_connector("sma", DIMS, 20, **settings), build_connector("sma_unshared", DIMS, 20, **settings)
    assert shared.shared is True and unshared.shared is False
    assert shared.num_memory == unshared.num_memory == 5  # the grounding maps read it
    assert [n for n, _ in shared.named_parameters() if "memor" in n] == ["memory"]
    assert sorted(n for n, _ in unshared.named_parameters() if "memor" in n) == [f"memories.{m}" for m in sorted(DIMS)]
    assert len(build_connector("mlp_qformer", DIMS, 20, **settings).adapters["image"].blocks) == 3


def test_sma_shares_its_memory_unless_told_otherwise():
    sma = SMA(DIMS, out_dim=20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8, dropout=0.0)
    assert sma.shared and [n for n, _ in sma.named_parameters() if "memor" in n] == ["memory"]


@pytest.mark.parametrize("kind", ["sma", "mlp_qformer"])
def test_the_token_mask_lives_on_the_tokens_device(kind):
    # On the meta device (a stand-in for a GPU here): a mask left on the CPU would not be beside its tokens.
    with torch.device("meta"):
        connector = build_connector(kind, DIMS, 20, num_memory=5, memory_dim=16, hidden_size=24, num_heads=8,
                                    dropout=0.0, qformer_layers=2)
    # Called outside the block, where new tensors default to the CPU.
    features, mask = torch.empty(2, 6, 12, device="meta"), torch.ones(2, 6, dtype=torch.bool, device="meta")
    tokens, mask = connector("image", features, mask)
    assert tokens.device.type == mask.device.type == "meta" and mask.dtype == torch.bool
