"""What generate refuses and what it leaves behind: whole outputs, clear errors, no file read outside its roots."""

import json
import shutil

import pytest

from s2d_align.data.manifest import ManifestError, read_manifest, write_manifest
from s2d_align.inference.generation import generate_file, generation_overrides, sidecar_path
from s2d_align.training.loop import train


@pytest.fixture(scope="module")
def run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_outputs")
    train(tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 1}]"), out)
    return out


def _copy_manifest(tiny_world, tmp_path, change):
    """The tiny manifest, beside the same images, with ``change(studies)`` applied."""
    shutil.copytree(tiny_world.manifest.parent / "images", tmp_path / "images")
    studies = change(read_manifest(tiny_world.manifest))
    write_manifest(tmp_path / "manifest.jsonl", studies)
    return tmp_path / "manifest.jsonl"


def _with_images(study, images):
    import dataclasses

    return dataclasses.replace(study, images=tuple(images), views=("PA",) * len(images))


def test_a_failed_generate_keeps_the_previous_predictions(run, tiny_world, tmp_path):
    victim = next(s for s in read_manifest(tiny_world.manifest) if s.split == "test")
    manifest = _copy_manifest(tiny_world, tmp_path, lambda studies: [
        _with_images(s, ["images/missing.png"]) if s.id == victim.id else s for s in studies])
    output = tmp_path / "p.jsonl"
    previous = "".join(json.dumps({"id": str(i), "reference": "r", "prediction": "p"}) + "\n" for i in range(25))
    output.write_text(previous)
    with pytest.raises(FileNotFoundError) as caught:
        generate_file(run / "checkpoints" / "s1", manifest, "test", output)
    assert f"named by {manifest} do not exist" in str(caught.value)
    assert f"record {victim.id}: {tmp_path / 'images' / 'missing.png'}" in str(caught.value)
    assert output.read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.jsonl", "p.jsonl"]  # no temporary left


def test_a_generate_that_fails_half_way_keeps_the_previous_predictions(run, tiny_world, tmp_path):
    # The last test study's image exists but is not an image: generation fails after writing others.
    last = [s for s in read_manifest(tiny_world.manifest) if s.split == "test"][-1]
    manifest = _copy_manifest(tiny_world, tmp_path, lambda studies: [
        _with_images(s, ["images/corrupt.png"]) if s.id == last.id else s for s in studies])
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    output = tmp_path / "p.jsonl"
    previous = json.dumps({"id": "old", "reference": "r", "prediction": "p"}) + "\n"
    output.write_text(previous)
    with pytest.raises(ValueError, match="corrupt.png"):
        generate_file(run / "checkpoints" / "s1", manifest, "test", output, ["batch_size=1"])
    assert output.read_text() == previous
    assert not sidecar_path(output).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.jsonl", "p.jsonl"]


def test_the_output_may_not_be_the_manifest(run, tiny_world, tmp_path):
    manifest = tmp_path / "m.jsonl"
    shutil.copy(tiny_world.manifest, manifest)
    before = manifest.read_bytes()
    with pytest.raises(ValueError, match="is also the input --manifest"):
        generate_file(run / "checkpoints" / "s1", manifest, "test", manifest)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("where", ["absolute", "dot-dot"])
def test_image_paths_outside_the_manifest_folder_are_refused(run, tiny_world, tmp_path, where, monkeypatch):
    secret = tmp_path / "secret" / "id_rsa.png"
    secret.parent.mkdir()
    shutil.copy(next((tiny_world.manifest.parent / "images").iterdir()), secret)
    inner = tmp_path / "inner"
    inner.mkdir()
    path = str(secret) if where == "absolute" else "../secret/id_rsa.png"
    manifest = _copy_manifest(tiny_world, inner, lambda studies: [
        _with_images(s, [path]) if s.split == "test" else s for s in studies])
    opened = []
    import PIL.Image

    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    with pytest.raises(ManifestError, match=r"(?s)image path\(s\) lie outside .*--allow-absolute-paths"):
        generate_file(run / "checkpoints" / "s1", manifest, "test", inner / "p.jsonl")
    assert not any("id_rsa" in p for p in opened)
    assert not (inner / "p.jsonl").exists()
    # the folder named on the command line, or the explicit flag, lets it through
    generate_file(run / "checkpoints" / "s1", manifest, "test", inner / "p.jsonl", images=secret.parent)
    generate_file(run / "checkpoints" / "s1", manifest, "test", inner / "q.jsonl", allow_absolute_paths=True)
    assert (inner / "p.jsonl").read_text() == (inner / "q.jsonl").read_text()


def test_each_kind_of_wrong_checkpoint_folder_gets_its_own_message(run, tiny_world, tmp_path):
    def refused(folder, error, message):
        with pytest.raises(error, match=message):
            generate_file(folder, tiny_world.manifest, "test", tmp_path / "p.jsonl")

    refused(tmp_path / "nowhere", FileNotFoundError, "no such checkpoint folder")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", ValueError, "the folder is empty")
    refused(run, ValueError, rf"is a run folder, not a stage checkpoint; pass one of its stages: {run / 'checkpoints' / 's1'}")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run / "checkpoints" / "s1", unfinished)
    meta = json.loads((unfinished / "meta.json").read_text())
    (unfinished / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    refused(unfinished, ValueError, r"stage 's1' did not finish \(complete: false")
    (unfinished / "meta.json").unlink()
    refused(unfinished, ValueError, r"not a finished checkpoint \(no meta\.json\)")
    assert not (tmp_path / "p.jsonl").exists()


def test_overrides_with_or_without_the_generate_prefix(run, tiny_world, tmp_path):
    assert generation_overrides(["num_beams=2", "generate.max_new_tokens=4"]) == [
        "generate.num_beams=2", "generate.max_new_tokens=4"]
    checkpoint = run / "checkpoints" / "s1"
    generate_file(checkpoint, tiny_world.manifest, "test", tmp_path / "a.jsonl", ["num_beams=1", "max_new_tokens=4"])
    generate_file(checkpoint, tiny_world.manifest, "test", tmp_path / "b.jsonl",
                  ["generate.num_beams=1", "generate.max_new_tokens=4"])
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    meta = json.loads(sidecar_path(tmp_path / "b.jsonl").read_text())
    assert meta["generate"]["num_beams"] == 1 and meta["generate"]["max_new_tokens"] == 4
    assert meta["evaluate"] == {"clean": "mimic_cxr", "labeler": "rules"}  # the recipe's own scoring settings
    assert meta["stage"] == "s1" and meta["checkpoint"] == str(checkpoint.resolve())
    with pytest.raises(ValueError, match=r"command-line override `generate.num_beams=0`: generate.num_beams must be at least 1"):
        generate_file(checkpoint, tiny_world.manifest, "test", tmp_path / "c.jsonl", ["num_beams=0"])
