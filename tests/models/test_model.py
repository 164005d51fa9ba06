import pytest
import torch

from s2d_align.data.dataset import Collator, TrainingDataset
from s2d_align.data.manifest import read_manifest
from s2d_align.models.model import parse_context


def _items(world, built, size=3, max_images=1):
    """The first ``size`` training studies as dataset items, views padded to ``max_images``."""
    studies = read_manifest(world.manifest)
    train = [s for s in studies if s.split == "train"][:size]
    dataset = TrainingDataset(train, {s.id: s.findings for s in studies}, world.manifest, built.preprocess,
                              max_images=max_images, max_key_phrases=2)
    return [dataset[i] for i in range(len(dataset))]


def _collator(built):
    return Collator(built.tokenizers.llm, built.tokenizers.text, max_report_tokens=48, max_text_tokens=32)


def _batch(world, built, size=3):
    return _collator(built)(_items(world, built, size))


def test_parse_context():
    assert parse_context("reference+image") == ("image", "reference")
    assert parse_context("image+reference+key_phrases") == ("image", "reference", "key_phrases")
    for bad in ("reference", "image+image", "image+report"):
        with pytest.raises(ValueError, match="include 'image'"):
            parse_context(bad)


@pytest.mark.parametrize(
    "context, adapters", [(("image",), 1), (("image", "reference"), 2), (("image", "reference", "key_phrases"), 3)]
)
def test_prefix_is_prompt_adapter_tokens_instruction(tiny_world, tiny_built, context, adapters):
    model = tiny_built.model
    batch = _batch(tiny_world, tiny_built)
    embeds, mask = model.prefix(batch, context)
    expected = len(model.prompt_ids) + adapters * 4 + len(model.instruction_ids)  # num_memory = 4
    assert embeds.shape == (3, expected, 64) and mask.shape == (3, expected) and mask.all()
    assert model.prompt_ids[0].item() == tiny_built.tokenizers.llm.bos_token_id


def test_batch_holds_report_with_eos_and_padding(tiny_world, tiny_built):
    batch = _batch(tiny_world, tiny_built)
    tokenizer = tiny_built.tokenizers.llm
    lengths = batch["report_mask"].sum(dim=1)
    for row, length in zip(batch["report_ids"], lengths):
        assert row[length - 1].item() == tokenizer.eos_token_id
        assert (row[length:] == tokenizer.pad_token_id).all()
    assert batch["pixel_values"].shape == (3, 1, 3, 56, 56)


def test_loss_counts_report_tokens_only(tiny_world, tiny_built):
    model = tiny_built.model.eval()
    batch = _batch(tiny_world, tiny_built)
    with torch.no_grad():
        sums, counts = model(batch, ("image",))
        assert counts.tolist() == batch["report_mask"].sum(dim=1).float().tolist()
        # Changing token ids under padding changes nothing.
        padded = dict(batch, report_ids=batch["report_ids"].masked_fill(batch["report_mask"] == 0, 7))
        torch.testing.assert_close(model(padded, ("image",))[0], sums)
        # Auxiliary inputs are read only when the context asks for them.
        scrambled = dict(batch, reference_ids=batch["reference_ids"].flip(0), key_phrase_ids=batch["key_phrase_ids"].flip(0))
        torch.testing.assert_close(model(scrambled, ("image",))[0], sums)
        with_reference = model(batch, ("image", "reference"))[0]
        assert not torch.allclose(with_reference, sums)


def test_loss_matches_a_direct_computation(tiny_world, tiny_built):
    """The summed loss equals cross-entropy computed by hand over the full sequence's logits.

    The model runs in float64, so that only the float32 sums of the loss (which takes float32 logits)
    differ between the two ways, by at most a few 1e-7 on any CPU: less than a position off by one
    moves the loss (3e-6 relative)."""
    import copy

    model = copy.deepcopy(tiny_built.model).double().eval()
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in _batch(tiny_world, tiny_built, size=2).items()}
    with torch.no_grad():
        sums, _ = model(batch, ("image",))
        embeds, mask = model.prefix(batch, ("image",))
        for i in range(2):
            length = int(batch["report_mask"][i].sum())
            ids = batch["report_ids"][i, :length]
            inputs = torch.cat([embeds[i : i + 1], model.llm.get_input_embeddings()(ids)[None]], dim=1)
            logits = model.llm(inputs_embeds=inputs).logits[0, embeds.shape[1] - 1 : -1]
            expected = torch.nn.functional.cross_entropy(logits.float(), ids, reduction="sum")
            torch.testing.assert_close(sums[i], expected, rtol=1e-6, atol=0)


def test_fresh_lora_is_the_identity(tiny_world, tiny_built):
    """LoRA is attached at build time with B = 0, so before stage 2 the LLM is exactly the frozen base."""
    model = tiny_built.model.eval()
    batch = _batch(tiny_world, tiny_built, size=2)
    with torch.no_grad():
        with_lora = model(batch, ("image",))[0]
        with model.llm.disable_adapter():
            without = model(batch, ("image",))[0]
    torch.testing.assert_close(with_lora, without)


@pytest.mark.parametrize("kind", ["sma", "mlp"])
def test_padding_changes_no_studys_loss(tiny_world, kind):
    """Each study's loss in a padded batch (a padded second view, references, key phrases and reports of
    other lengths) equals its loss alone, unpadded. The MLP connector passes its padding on to the LLM,
    so there the LLM's attention mask and positions must skip the padded tokens in mid-sequence."""
    from s2d_align.models.model import build_model

    torch.manual_seed(0)
    built = build_model(tiny_world.config(f"model.connector.kind={kind}").model)
    model = built.model.eval()
    collate = _collator(built)
    context = ("image", "reference", "key_phrases")
    batch = collate(_items(tiny_world, built, max_images=2))
    assert not batch["image_mask"][:, 1].any()  # one view each: the second is padding
    for key in ("report_mask", "reference_mask", "key_phrase_mask"):
        assert len(set(batch[key].sum(dim=1).tolist())) > 1, key  # lengths differ: padding in every text
    with torch.no_grad():
        sums, counts = model(batch, context)
        embeds, _ = model.prefix(batch, context)
        for i, item in enumerate(_items(tiny_world, built, max_images=1)):
            single = collate([item])
            alone, count = model(single, context)
            assert count.item() == counts[i].item()
            torch.testing.assert_close(sums[i : i + 1], alone, rtol=1e-5, atol=1e-5)
            if kind == "sma":  # the same number of adapter tokens padded or not: the tokens themselves agree
                torch.testing.assert_close(embeds[i : i + 1], model.prefix(single, context)[0], rtol=0, atol=1e-5)


def test_build_pins_prompt_ids_special_tokens_and_the_connectors_inputs(tiny_world):
    from s2d_align.models.model import build_model

    config = tiny_world.config("model.connector.kind=mlp_qformer", "model.connector.qformer_layers=3")
    built = build_model(config.model)
    model, tokenizer = built.model, built.tokenizers.llm
    prompt = tokenizer(config.model.prompt.prompt, add_special_tokens=False).input_ids
    instruction = tokenizer(config.model.prompt.instruction, add_special_tokens=False).input_ids
    assert model.prompt_ids.tolist() == [tokenizer.bos_token_id, *prompt] and model.prompt_ids.dtype == torch.long
    assert model.instruction_ids.tolist() == instruction and model.instruction_ids.dtype == torch.long
    assert tokenizer.bos_token_id not in instruction and tokenizer.eos_token_id not in instruction
    assert (model.eos_token_id, model.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id) != (None, None)
    assert {k for k in model.state_dict() if k.endswith(("prompt_ids", "instruction_ids"))} == set()  # not saved
    assert set(model.connector.adapters) == {"image", "reference", "key_phrases"}
    assert all(len(adapter.blocks) == 3 for adapter in model.connector.adapters.values())
    text_width = model.text.hidden_size
    for name in ("reference", "key_phrases"):
        assert model.connector.adapters[name].blocks[0].cross_attention.kdim == text_width
    assert model.connector.adapters["image"].blocks[0].cross_attention.kdim == model.vision.hidden_size
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)

    image_only = build_model(config.model, text_encoder=False)
    assert image_only.model.text is None and image_only.tokenizers.text is None
    assert set(image_only.model.connector.adapters) == {"image"}


def test_a_bfloat16_llm_reads_the_adapter_tokens_in_its_dtype(tiny_world, tiny_built):
    from s2d_align.models.model import build_model

    built = build_model(tiny_world.config("model.llm.dtype=bfloat16").model)
    batch = _batch(tiny_world, built, size=2)
    embeds, mask = built.model.prefix(batch, ("image", "reference"))
    assert embeds.dtype == torch.bfloat16 and mask.dtype == torch.bool
    with torch.no_grad():
        sums, counts = built.model(batch, ("image",))
    assert sums.dtype == torch.float32 and torch.isfinite(sums).all() and counts.tolist() == [
        float(n) for n in batch["report_mask"].sum(dim=1)]


def test_build_never_runs_a_text_encoders_remote_code_by_default(tiny_world, tmp_path):
    import shutil

    from s2d_align.models.model import build_model
    from tests.conftest import plant_remote_code

    folder, marker = tmp_path / "text", tmp_path / "ran"
    shutil.copytree(tiny_world.models["text"], folder)
    plant_remote_code(folder, marker, "Bert", "Model", "AutoModel", model_type="cxr-bert")  # a BERT checkpoint
    built = build_model(tiny_world.config(f"model.text.name_or_path={folder}").model)
    assert type(built.model.text.model).__name__ == "BertModel" and not marker.exists()


class _Fake(torch.nn.Module):
    def __init__(self, out=None, error=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out, self.error = out, error

    def forward(self, *args):
        if self.error is not None:
            raise self.error
        return self.out


def test_a_broken_encoder_fails_at_build_naming_its_key():
    from types import SimpleNamespace

    from s2d_align.models.model import smoke_test_encoders

    config = SimpleNamespace(vision=SimpleNamespace(name_or_path="my/vit"), text=SimpleNamespace(name_or_path="my/bert"))
    preprocess = lambda images: torch.zeros(len(images), 3, 8, 8)  # noqa: E731
    tokenizer = lambda texts, **kwargs: {"input_ids": torch.ones(1, 5, dtype=torch.long),  # noqa: E731
                                         "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    good_vision, good_text = _Fake(torch.zeros(1, 1, 8)), _Fake(torch.zeros(1, 5, 8))  # one patch token is enough
    smoke_test_encoders(good_vision, preprocess, good_text, tokenizer, config)  # passes
    smoke_test_encoders(good_vision, preprocess, None, None, config)  # image-only: E_t is not there to test
    cases = [
        (_Fake(torch.zeros(1, 8)), good_text,
         "model.vision.name_or_path='my/vit': loads but fails on a dummy input "
         "(ValueError: expected (1, N, d) patch tokens, got (1, 8))"),
        (_Fake(torch.zeros(1, 0, 8)), good_text,
         "model.vision.name_or_path='my/vit': loads but fails on a dummy input "
         "(ValueError: expected (1, N, d) patch tokens, got (1, 0, 8))"),
        (good_vision, _Fake(torch.zeros(1, 5)),
         "model.text.name_or_path='my/bert': loads but fails on a dummy input "
         "(ValueError: expected (1, T, d) token features, got (1, 5))"),
        (good_vision, _Fake(error=TypeError("CXRBertOutput.__init__()\n   got an unexpected keyword " + "x" * 300)),
         "model.text.name_or_path='my/bert': loads but fails on a dummy input "
         "(" + ("TypeError: CXRBertOutput.__init__() got an unexpected keyword " + "x" * 300)[:240] + ")"),
    ]
    for vision, text, message in cases:
        with pytest.raises(ValueError) as raised:
            smoke_test_encoders(vision, preprocess, text, tokenizer, config)
        assert str(raised.value) == message
        assert raised.value.__cause__ is not None


def test_a_tokenizer_that_adds_bos_itself_gets_it_once_before_the_prompt_only(tiny_world, tmp_path):
    """Vicuna's tokenizer adds BOS to every text it encodes: the prompt must hold one BOS, the instruction none."""
    import shutil

    from tokenizers import Tokenizer, processors

    from s2d_align.models.model import build_model

    folder = tmp_path / "llm"
    shutil.copytree(tiny_world.models["llm"], folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = tiny_world.config(f"model.llm.name_or_path={folder}", "model.vision.num_prefix_tokens=2")
    built = build_model(config.model)
    assert built.tokenizers.llm("lungs").input_ids[0] == bos  # the tokenizer does add it
    prompt, instruction = built.model.prompt_ids.tolist(), built.model.instruction_ids.tolist()
    assert prompt[0] == bos and bos not in prompt[1:] and bos not in instruction
    assert built.model.vision.num_prefix_tokens == 2  # the recipe's count, not the config's CLS + registers


def test_a_text_encoder_that_fails_on_the_dummy_input_stops_the_build(tiny_world, monkeypatch):
    from s2d_align.models import text
    from s2d_align.models.model import build_model

    def broken(self, input_ids, attention_mask):
        raise RuntimeError("remote code from an older revision")

    monkeypatch.setattr(text.TextEncoder, "forward", broken)
    config = tiny_world.config()
    with pytest.raises(ValueError) as raised:
        build_model(config.model)
    assert str(raised.value) == (f"model.text.name_or_path={config.model.text.name_or_path!r}: loads but fails on a "
                                 "dummy input (RuntimeError: remote code from an older revision)")
    assert build_model(config.model, text_encoder=False).model.text is None  # image-only never calls it
