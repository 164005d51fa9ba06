import pytest
import torch

from s2d_align.data.dataset import Collator, TrainingDataset
from s2d_align.data.manifest import read_manifest
from s2d_align.models.model import parse_context


def _batch(world, built, size=3):
    studies = [s for s in read_manifest(world.manifest) if s.split == "train"][:size]
    findings = {s.id: s.findings for s in read_manifest(world.manifest)}
    dataset = TrainingDataset(studies, findings, world.manifest, built.preprocess, max_images=1, max_key_phrases=2)
    collate = Collator(built.tokenizers.llm, built.tokenizers.text, max_report_tokens=48, max_text_tokens=32)
    return collate([dataset[i] for i in range(len(dataset))])


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
    """The summed loss equals cross-entropy computed by hand over the full sequence's logits."""
    model = tiny_built.model.eval()
    batch = _batch(tiny_world, tiny_built, size=2)
    with torch.no_grad():
        sums, _ = model(batch, ("image",))
        embeds, mask = model.prefix(batch, ("image",))
        for i in range(2):
            length = int(batch["report_mask"][i].sum())
            ids = batch["report_ids"][i, :length]
            inputs = torch.cat([embeds[i : i + 1], model.llm.get_input_embeddings()(ids)[None]], dim=1)
            logits = model.llm(inputs_embeds=inputs).logits[0, embeds.shape[1] - 1 : -1]
            expected = torch.nn.functional.cross_entropy(logits, ids, reduction="sum")
            torch.testing.assert_close(sums[i], expected, rtol=1e-4, atol=1e-4)


def test_fresh_lora_is_the_identity(tiny_world, tiny_built):
    """LoRA is attached at build time with B = 0, so before stage 2 the LLM is exactly the frozen base."""
    model = tiny_built.model.eval()
    batch = _batch(tiny_world, tiny_built, size=2)
    with torch.no_grad():
        with_lora = model(batch, ("image",))[0]
        with model.llm.disable_adapter():
            without = model(batch, ("image",))[0]
    torch.testing.assert_close(with_lora, without)
