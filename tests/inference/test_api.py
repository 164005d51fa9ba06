"""The Python API: same text as ``generate``, deterministic, overridable, every input kind, labels of the text."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.data.manifest import image_path, read_manifest
from s2d_align.inference.generation import generate_file
from s2d_align.training.loop import train


@pytest.fixture(scope="module")
def s3_checkpoint(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("api_run")
    train(tiny_world.config("train.stages.s2.lr=0.01", "train.stages.s3.lr=0.01"), out)
    return out / "checkpoints" / "s3"


@pytest.fixture(scope="module")
def generator(s3_checkpoint):
    from s2d_align import ReportGenerator

    return ReportGenerator.from_pretrained(s3_checkpoint, device="cpu")


def _test_images(tiny_world):
    return [(s.id, image_path(tiny_world.manifest, s.images[0])) for s in read_manifest(tiny_world.manifest) if s.split == "test"]


def test_text_equals_what_generate_writes(tiny_world, s3_checkpoint, generator, tmp_path):
    output = tmp_path / "p.jsonl"
    generate_file(s3_checkpoint, tiny_world.manifest, "test", output)
    written = {r["id"]: r["prediction"] for r in map(json.loads, output.read_text().splitlines())}
    images = _test_images(tiny_world)
    one_by_one = {sid: generator(path).text for sid, path in images}
    batched = dict(zip([sid for sid, _ in images], [r.text for r in generator.batch([p for _, p in images])]))
    assert one_by_one == written
    assert batched == written
    assert any(written.values())


def test_deterministic_and_every_input_kind_gives_the_same_report(tiny_world, generator):
    _, path = _test_images(tiny_world)[0]
    expected = generator(path)
    pil = Image.open(path)
    assert generator(str(path)) == expected
    assert generator(path.read_bytes()) == expected
    assert generator(pil) == expected
    assert generator(np.asarray(pil)) == expected
    assert generator([path]) == expected
    assert generator(path).text == expected.text  # twice: no state carried between calls


def test_labels_are_the_rules_labelers_of_the_text(tiny_world, generator):
    from s2d_align.evaluation.labelers.rules import RuleLabeler

    reports = generator.batch([p for _, p in _test_images(tiny_world)])
    for report in reports:
        assert set(report.labels) == set(OBSERVATIONS)
        assert report.labels == RuleLabeler().label([report.text])[0]
        assert report.heatmaps == []


def test_generation_settings_are_overridable(tiny_world, s3_checkpoint, generator):
    from s2d_align import ReportGenerator

    _, path = _test_images(tiny_world)[0]
    assert len(generator(path, max_new_tokens=2, num_beams=1).text.split()) <= 2
    short = ReportGenerator.from_pretrained(s3_checkpoint, max_new_tokens=2)
    assert short.info["settings"]["max_new_tokens"] == 2
    assert short(path).text == generator(path, max_new_tokens=2).text
    with pytest.raises(ValueError, match="unknown generation setting"):
        generator(path, beams=2)


def test_info_names_model_stage_and_settings(generator, s3_checkpoint):
    info = generator.info
    assert info["stage"] == "s3" and info["kind"] == "checkpoint"
    assert info["path"] == str(s3_checkpoint.resolve())
    assert info["settings"]["num_beams"] == 2 and info["settings"]["max_new_tokens"] == 8


def test_no_text_encoder_is_built_for_generation(s3_checkpoint, monkeypatch):
    import s2d_align.models.model as model_module
    from s2d_align import ReportGenerator

    def refuse(*args, **kwargs):
        raise AssertionError("generation must not construct the text encoder")

    monkeypatch.setattr(model_module, "load_text_encoder", refuse)
    gen = ReportGenerator.from_pretrained(s3_checkpoint)
    assert gen.model.text is None and gen.built.tokenizers.text is None
    assert set(gen.model.connector.adapters) == {"image"}


def test_import_is_light_and_inference_never_imports_the_trainer(s3_checkpoint, tiny_world, tmp_path):
    _, path = _test_images(tiny_world)[0]
    code = f"""
import sys
import s2d_align
assert "torch" not in sys.modules and "s2d_align.inference" not in sys.modules, "import s2d_align is not light"
from s2d_align import ReportGenerator
from s2d_align.cli import main
gen = ReportGenerator.from_pretrained({str(s3_checkpoint)!r})
gen({str(path)!r}, heatmaps=True)
assert main(["report", "--model", {str(s3_checkpoint)!r}, {str(path)!r}, "--output", {str(tmp_path / 'r.json')!r}]) == 0
assert main(["generate", "--checkpoint", {str(s3_checkpoint)!r}, "--manifest", {str(tiny_world.manifest)!r},
             "--output", {str(tmp_path / 'p.jsonl')!r}]) == 0
loaded = sorted(m for m in sys.modules if m.startswith("s2d_align.training"))
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_grounding_maps_have_patch_shape_and_sum_to_one(tiny_world, generator):
    _, path = _test_images(tiny_world)[0]
    report = generator(path, heatmaps=True)
    assert report.text == generator(path).text  # asking for maps changes no word
    assert report.heatmaps, report.text
    from s2d_align.inference.grounding import split_sentences

    sentences = [report.text[a:b].strip() for a, b in split_sentences(report.text)]
    assert [m.sentence for m in report.heatmaps] == [s for s in sentences if s in {m.sentence for m in report.heatmaps}]
    for item in report.heatmaps:
        assert item.view == 0
        assert item.map.shape == (4, 4)  # 56 px images, patch 14
        assert item.map.min() >= 0 and abs(item.map.sum() - 1.0) < 1e-6
    from s2d_align.inference.grounding import overlay

    picture = overlay(Image.open(path), report.heatmaps[0].map)
    assert picture.mode == "RGB" and picture.size == Image.open(path).size


def test_monochrome1_dicom_and_its_monochrome2_twin_give_identical_reports(generator, tmp_path):
    from tests.inference.test_images import write_dicom

    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    twin = (int(stored.max()) + int(stored.min()) - stored.astype(np.int32)).astype(np.uint16)
    a = generator(write_dicom(tmp_path / "a.dcm", stored, "MONOCHROME1"))
    b = generator(write_dicom(tmp_path / "b.dcm", twin, "MONOCHROME2"))
    assert a == b and a.text
