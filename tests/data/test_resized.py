"""``prepare ... --image-size N``: resized copies that the manifest names, the same pixels for the model when N is its input."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from tests.data.realdata_fixtures import MIMIC_IMAGES, write_mimic_tree

from s2d_align.cli import main
from s2d_align.data.images import load_image
from s2d_align.data.manifest import image_path, read_manifest
from s2d_align.data.mimic_cxr import prepare_mimic_cxr
from s2d_align.data.resized import resized, shortest_edge_size
from s2d_align.models.standins import RAD_DINO_PREPROCESSOR
from s2d_align.models.vision import ImagePreprocessor

WIDTH, HEIGHT = 700, 600  # landscape, so the shorter side is the height


def _radiograph(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, WIDTH)[None, :] + np.linspace(0, 40, HEIGHT)[:, None]
    return Image.fromarray(np.clip(ramp + rng.normal(0, 20, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8), mode="L")


@pytest.fixture()
def tree(tmp_path):
    """The MIMIC fixture tree, its readable JPEGs replaced by 700 x 600 noisy ramps."""
    jpg, reports = write_mimic_tree(tmp_path / "raw")
    for index, path in enumerate(sorted(jpg.rglob("*.jpg"))):
        kind = next(k for d, *_, k in MIMIC_IMAGES if d == path.stem)
        if kind == "ok":
            _radiograph(index).save(path, quality=95)
    return jpg, reports


def _report(out):
    return json.loads((out / "prepare_report.json").read_text())


def test_copies_are_named_relative_to_the_manifest_and_resized_on_the_shorter_side(tree, tmp_path):
    jpg, reports = tree
    out = tmp_path / "out"
    manifest, _ = prepare_mimic_cxr(jpg, reports, out, image_size=64)
    plain, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "plain")
    studies, originals = read_manifest(manifest), {s.id: s for s in read_manifest(plain)}
    assert [s.id for s in studies] == list(originals)
    count = 0
    for study in studies:
        original = originals[study.id]
        assert study.views == original.views
        for copy, source in zip(study.images, original.images, strict=True):
            assert copy.startswith("images_64/files/p") and copy.endswith(".png")
            assert not os.path.isabs(copy)
            stem = os.path.relpath(source, jpg / "files")
            assert copy == os.path.join("images_64", "files", stem[: -len(".jpg")] + ".png")
            image = Image.open(image_path(manifest, copy))
            assert image.mode == "L" and image.size == (int(64 * WIDTH / HEIGHT), 64) == (74, 64)
            expected = load_image(source).resize((74, 64), resample=Image.Resampling.BICUBIC)
            assert np.array_equal(np.asarray(image), np.asarray(expected))
            count += 1
    notes = _report(out)["notes"]["resized_copies"]
    assert notes["written"] == count and notes["reused"] == 0 and notes["failed"] == 0
    assert notes["image_size"] == 64 and notes["folder"] == "images_64"
    assert _report(out)["inputs"]["image_size"] == 64


def test_at_the_encoders_input_size_the_model_sees_the_same_pixels(tree, tmp_path):
    """Rad-DINO's processor (shortest edge 518, bicubic, centre crop): copies at 518 give bitwise the originals' tensor."""
    from transformers import AutoImageProcessor

    folder = tmp_path / "rad-dino"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps(RAD_DINO_PREPROCESSOR))
    preprocess = ImagePreprocessor(AutoImageProcessor.from_pretrained(folder))
    jpg, reports = tree
    copies, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "out", image_size=518)
    plain, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "plain")
    for copy, original in zip(read_manifest(copies), read_manifest(plain), strict=True):
        small = [load_image(image_path(copies, p)) for p in copy.images]
        assert all(min(image.size) == 518 for image in small)
        full = [load_image(p) for p in original.images]
        assert torch.equal(preprocess(small), preprocess(full))
    # A size other than the encoder's resizes twice: close, not equal.
    other, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "other", image_size=560)
    first = read_manifest(other)[0]
    twice = preprocess([load_image(image_path(other, first.images[0]))])
    once = preprocess([load_image(read_manifest(plain)[0].images[0])])
    assert not torch.equal(twice, once)
    grey_levels = (twice - once).abs() * 255 * RAD_DINO_PREPROCESSOR["image_std"][0]
    assert 0 < grey_levels.mean().item() < 5  # 3.4 on this per-pixel noise (sd 20 levels), the worst case for resampling


def test_a_rerun_reuses_copies_and_rewrites_those_whose_source_changed(tree, tmp_path):
    jpg, reports = tree
    out = tmp_path / "out"
    prepare_mimic_cxr(jpg, reports, out, image_size=64)
    written = _report(out)["notes"]["resized_copies"]["written"]
    source = sorted(p for p in jpg.rglob("*.jpg") if next(k for d, *_, k in MIMIC_IMAGES if d == p.stem) == "ok")[0]
    copy = out / "images_64" / source.relative_to(jpg).with_suffix(".png")
    before = copy.stat().st_mtime_ns
    future = copy.stat().st_mtime + 10
    os.utime(source, (future, future))
    prepare_mimic_cxr(jpg, reports, out, image_size=64)
    notes = _report(out)["notes"]["resized_copies"]
    assert (notes["written"], notes["reused"]) == (1, written - 1)
    assert copy.stat().st_mtime_ns != before
    assert not list((out / "images_64").rglob("*.tmp"))


def test_an_image_that_fails_to_decode_while_resizing_is_dropped_as_the_full_check_would(tree, tmp_path):
    jpg, reports = tree
    # check_images=none lets the truncated and garbage files through to the resize step.
    manifest, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "late", image_size=64, check_images="none")
    prepare_mimic_cxr(jpg, reports, tmp_path / "checked", check_images="full")
    late, checked = _report(tmp_path / "late"), _report(tmp_path / "checked")
    assert late["skipped_ids"] == checked["skipped_ids"] and "no_usable_images" in late["skipped_ids"]
    dropped = {k: v for k, v in checked["fixed_ids"].items() if k.startswith("image_dropped:")}
    assert dropped and dropped == {k: v for k, v in late["fixed_ids"].items() if k.startswith("image_dropped:")}
    assert late["notes"]["resized_copies"]["failed"] == 3  # d8-lat (truncated), d10-pa and d10-lat (garbage)
    for study in read_manifest(manifest):
        assert all(image_path(manifest, p).is_file() for p in study.images)


def test_never_enlarges_and_rounds_as_transformers_does():
    small = Image.new("L", (50, 40), 7)
    assert resized(small, 64) is small
    assert shortest_edge_size((2544, 3056), 518) == (518, 622)
    assert shortest_edge_size((3056, 2544), 518) == (622, 518)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_bad_size_is_refused_before_any_work(tree, tmp_path, capsys, size):
    jpg, reports = tree
    code = main(["prepare", "mimic-cxr", "--jpg-root", str(jpg), "--reports", str(reports),
                 "--out", str(tmp_path / "out"), "--image-size", size])
    assert code == 2
    assert "--image-size must be a positive number of pixels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_builder_takes_the_option_through_the_cli(tree, tmp_path):
    """mimic-cxr, iu-xray and r2gen: the copies keep the layout under the folder each was given."""
    from tests.data.realdata_fixtures import write_openi

    jpg, reports = tree
    assert main(["prepare", "mimic-cxr", "--jpg-root", str(jpg), "--reports", str(reports),
                 "--out", str(tmp_path / "mimic"), "--image-size", "64"]) == 0
    mimic = read_manifest(tmp_path / "mimic" / "manifest.jsonl")
    assert all(p.startswith("images_64/files/") for s in mimic for p in s.images)

    annotation = tmp_path / "annotation.json"
    assert main(["export", "r2gen", "--manifest", str(tmp_path / "mimic" / "manifest.jsonl"),
                 "--out", str(annotation), "--image-root", str(tmp_path / "mimic")]) == 0
    assert main(["prepare", "r2gen", "--annotation", str(annotation), "--images", str(tmp_path / "mimic"),
                 "--out", str(tmp_path / "r2gen"), "--image-size", "32"]) == 0
    imported = read_manifest(tmp_path / "r2gen" / "manifest.jsonl")
    assert [p for s in imported for p in s.images] == [
        p.replace("images_64/", "images_32/images_64/") for s in mimic for p in s.images
    ]
    assert all(min(Image.open(image_path(tmp_path / "r2gen" / "manifest.jsonl", p)).size) == 32
               for s in imported for p in s.images)

    texts, pngs = write_openi(tmp_path / "openi")
    assert main(["prepare", "iu-xray", "--reports", str(texts), "--images", str(pngs), "--out", str(tmp_path / "iu"),
                 "--reference", "none", "--image-size", "16"]) == 0
    iu = read_manifest(tmp_path / "iu" / "manifest.jsonl")
    assert iu and all(p.startswith("images_16/") and p.endswith(".png") for s in iu for p in s.images)
    assert all(Image.open(image_path(tmp_path / "iu" / "manifest.jsonl", p)).size == (16, 16) for s in iu for p in s.images)
