"""Generation reads the image alone: auxiliary manifest fields cannot change a prediction."""

import dataclasses
import json

import pytest
import torch

from s2d_align.data.dataset import ImageOnlyItem
from s2d_align.data.manifest import KeyPhrase, read_manifest, write_manifest
from s2d_align.inference.generation import generate_file
from s2d_align.training.loop import train


@pytest.fixture(scope="module")
def s3_checkpoint(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_run")
    train(tiny_world.config("train.stages.s2.lr=0.01", "train.stages.s3.lr=0.01"), out)
    return out / "checkpoints" / "s3"


def _predict(checkpoint, manifest, output, *overrides):
    generate_file(checkpoint, manifest, "test", output, overrides)
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_predictions_cover_the_split_with_ground_truth(tiny_world, s3_checkpoint, tmp_path):
    records = _predict(s3_checkpoint, tiny_world.manifest, tmp_path / "p.jsonl")
    studies = {s.id: s for s in read_manifest(tiny_world.manifest) if s.split == "test"}
    assert [r["id"] for r in records] == list(studies)
    assert all(r["reference"] == studies[r["id"]].findings for r in records)
    assert all(set(r) == {"id", "reference", "prediction"} and isinstance(r["prediction"], str) for r in records)


def test_removing_or_changing_auxiliary_fields_changes_no_prediction(tiny_world, s3_checkpoint, tmp_path, monkeypatch):
    # Beyond the text, record what the LLM is given: the prefix embeddings of every generation batch.
    from s2d_align.models.model import S2DAlign

    real_prefix, prefixes = S2DAlign.prefix, []

    def recording(self, batch, context):
        embeds, mask = real_prefix(self, batch, context)
        prefixes.append((embeds.detach().clone(), mask.clone()))
        return embeds, mask

    monkeypatch.setattr(S2DAlign, "prefix", recording)
    baseline = _predict(s3_checkpoint, tiny_world.manifest, tmp_path / "full.jsonl")
    baseline_prefixes, prefixes[:] = list(prefixes), []
    assert baseline_prefixes
    studies = read_manifest(tiny_world.manifest)
    stripped = [
        dataclasses.replace(s, reference_id=None, key_phrases=(), radgraph=None, labels=None) for s in studies
    ]
    ids = [s.id for s in studies]
    shuffled = [
        dataclasses.replace(
            s,
            reference_id=ids[(i + 3) % len(ids)] if s.split == "test" else s.reference_id,
            key_phrases=(KeyPhrase("large right pneumothorax", "test"),),
            labels={"Pneumothorax": 1},
        )
        for i, s in enumerate(studies)
    ]
    for name, variant in (("stripped", stripped), ("shuffled", shuffled)):
        manifest = tmp_path / f"{name}.jsonl"
        write_manifest(manifest, variant)
        (tmp_path / "images").mkdir(exist_ok=True)
        for s in studies:  # same image files, found relative to the new manifest
            target = tmp_path / s.images[0]
            if not target.exists():
                target.symlink_to(tiny_world.root / s.images[0])
        assert _predict(s3_checkpoint, manifest, tmp_path / f"{name}.out.jsonl") == baseline
        assert len(prefixes) == len(baseline_prefixes)
        for (embeds, mask), (embeds_0, mask_0) in zip(prefixes, baseline_prefixes):
            assert torch.equal(embeds, embeds_0) and torch.equal(mask, mask_0)
        prefixes.clear()


def test_the_image_does_change_what_the_llm_is_given(tiny_world, s3_checkpoint, tmp_path):
    """The counterpart of the test above: the prefix depends on the image, so comparing prefixes could fail."""
    from s2d_align.models.pretrained import load_pretrained

    built, _, _ = load_pretrained(s3_checkpoint)
    model = built.model.eval()
    pixels = torch.randn(2, 1, 3, 56, 56)
    mask = torch.ones(2, 1, dtype=torch.bool)
    with torch.no_grad():
        embeds_a, _ = model.prefix({"pixel_values": pixels, "image_mask": mask}, ("image",))
        embeds_b, _ = model.prefix({"pixel_values": pixels.flip(0), "image_mask": mask}, ("image",))
    assert not torch.allclose(embeds_a[0], embeds_b[0])


def test_generation_item_carries_only_id_images_and_truth():
    assert [f.name for f in dataclasses.fields(ImageOnlyItem)] == ["id", "images", "findings"]


def test_generation_settings_can_be_overridden(tiny_world, s3_checkpoint, tmp_path):
    short = _predict(s3_checkpoint, tiny_world.manifest, tmp_path / "short.jsonl", "max_new_tokens=2", "num_beams=1")
    assert all(len(r["prediction"].split()) <= 2 for r in short)
