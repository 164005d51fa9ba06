import json
import os
import subprocess
import sys
import tarfile

import pytest
from PIL import Image
from tests.data.realdata_fixtures import openi_xml, write_openi

from s2d_align.cli import main
from s2d_align.data.iu_xray import image_key, prepare_iu_xray, read_reports, seeded_split
from s2d_align.data.leakage import LeakageError
from s2d_align.data.manifest import read_manifest
from s2d_align.data.prepare_report import PrepareError, PrepareReport


@pytest.fixture()
def openi(tmp_path):
    return write_openi(tmp_path / "openi")


@pytest.fixture()
def tiny_vision(tiny_world):
    return tiny_world.models["vision"]


KEPT = {
    "CXR1_IM-0001", "CXR2_IM-0652", "CXR5_IM-2117", "CXR7_IM-2263", "CXR8_IM-2333",
    *(f"CXR{n}_IM-{n:04d}" for n in range(10, 20)),
}


def test_image_keys_match_both_namings():
    assert image_key("CXR1000_IM-0003-1001.png") == "1000_IM-0003-1001"
    assert image_key("1000_IM-0003-1001.dcm.png") == "1000_IM-0003-1001"
    assert image_key("CXR1000_IM-0003-1001") == "1000_IM-0003-1001"


def test_seeded_split_is_about_seventy_ten_twenty_reproducible_and_per_patient():
    ids = [f"CXR{i}" for i in range(10_000)]
    split = seeded_split(ids, seed=3)
    shares = [list(split.values()).count(name) / len(ids) for name in ("train", "val", "test")]
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.015)
    assert split == seeded_split(list(reversed(ids)), seed=3) and split != seeded_split(ids, seed=4)
    # each patient's split depends on its id alone: dropping one moves nobody else
    assert seeded_split(ids[:50] + ids[51:], seed=3) == {i: s for i, s in split.items() if i != ids[50]}


def test_reports_not_in_utf8_are_decoded_like_mimic(tmp_path):
    reports = tmp_path / "xml"
    reports.mkdir()
    (reports / "1.xml").write_bytes(openi_xml("CXR1", "Heart size normal \u2013 stable.", None, ["CXR1_IM-0001-1001"]).encode("cp1252"))
    # 0x81 is undefined in Windows-1252: Latin-1 as a last resort, no replacement characters
    (reports / "2.xml").write_bytes(openi_xml("CXR2", "Lungs clear \x81 today.", None, ["CXR2_IM-0002-1001"]).encode("latin-1"))
    report = PrepareReport("iu-xray")
    parsed = {r.uid: r for r in read_reports(reports, report)}
    assert parsed["CXR1"].findings == "Heart size normal \u2013 stable." and parsed["CXR1"].recoded
    assert parsed["CXR2"].findings == "Lungs clear \x81 today." and parsed["CXR2"].recoded
    report.keep_all([("CXR1_IM-0001", "train"), ("CXR2_IM-0002", "train")])
    assert report.to_json()["fixed_ids"] == {"report_not_utf8": ["CXR1_IM-0001", "CXR2_IM-0002"]}


def test_prepare_without_annotation(openi, tmp_path):
    reports, images = openi
    out = tmp_path / "out"
    manifest, _ = prepare_iu_xray(reports, images, out, reference="none", seed=1)
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == KEPT
    assert sorted(s.split for s in studies.values()) == ["test"] * 4 + ["train"] * 10 + ["val"] * 1
    one = studies["CXR1_IM-0001"]
    assert one.subject_id == "CXR1" and one.study_id == "CXR1_IM-0001"
    assert one.findings == "The heart is normal. Calcified granuloma in the right upper lobe."
    assert one.impression == "No acute disease."
    assert [p.rsplit("/", 1)[1] for p in one.images] == ["CXR1_IM-0001-3001.png", "CXR1_IM-0001-4001.png"]
    assert one.views == ("UNKNOWN", "UNKNOWN") and one.reference_id is None
    assert [(k.text, k.source) for k in one.key_phrases] == [("calcified granuloma in right upper lobe", "rules:iu_xray")]
    assert studies["CXR5_IM-2117"].findings == "The patient\u2019s lungs are clear."
    assert len(studies["CXR7_IM-2263"].images) == 1
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["skipped_ids"] == {
        "duplicate_id": ["CXR2_IM-0652@20.xml"], "no_findings": ["CXR4_IM-2050"], "no_images": ["CXR3"],
        "no_usable_images": ["CXR9_IM-2407"], "unreadable_report": ["CXR6"],
    }
    assert report["fixed_ids"] == {
        "image_16bit_rescaled": ["CXR8_IM-2333"], "image_alpha_flattened": ["CXR8_IM-2333"],
        "image_dropped:missing_file": ["CXR7_IM-2263"], "report_not_utf8": ["CXR5_IM-2117"],
    }
    assert report["kept"] == 15 and report["skipped"] == 5


def test_removing_a_study_leaves_every_other_split_unchanged(openi, tmp_path):
    reports, images = openi
    before, _ = prepare_iu_xray(reports, images, tmp_path / "before", reference="none", seed=1)
    (reports / "13.xml").unlink()
    after, _ = prepare_iu_xray(reports, images, tmp_path / "after", reference="none", seed=1)
    old = {s.id: s.split for s in read_manifest(before)}
    assert {s.id: s.split for s in read_manifest(after)} == {k: v for k, v in old.items() if k != "CXR13_IM-0013"}


def test_radgraph_phrases_where_given_rules_elsewhere(openi, tmp_path):
    reports, images = openi
    radgraph = tmp_path / "iu_radgraph.json"
    radgraph.write_text(json.dumps({"CXR1": {
        "text": "Calcified granuloma in the right upper lobe .",
        "entities": {
            "1": {"tokens": "Calcified", "label": "OBS-DP", "start_ix": 0, "end_ix": 0, "relations": [["modify", "2"]]},
            "2": {"tokens": "granuloma", "label": "OBS-DP", "start_ix": 1, "end_ix": 1, "relations": [["located_at", "5"]]},
            "3": {"tokens": "right", "label": "ANAT-DP", "start_ix": 4, "end_ix": 4, "relations": [["modify", "5"]]},
            "4": {"tokens": "upper", "label": "ANAT-DP", "start_ix": 5, "end_ix": 5, "relations": [["modify", "5"]]},
            "5": {"tokens": "lobe", "label": "ANAT-DP", "start_ix": 6, "end_ix": 6, "relations": []},
        },
    }}))
    manifest, report = prepare_iu_xray(reports, images, tmp_path / "out", reference="none", radgraph=[radgraph])
    studies = {s.id: s for s in read_manifest(manifest)}
    assert [(k.text, k.source) for k in studies["CXR1_IM-0001"].key_phrases] == [
        ("Calcified granuloma in right upper lobe", "radgraph:composed")
    ]
    assert [(k.text, k.source) for k in studies["CXR2_IM-0652"].key_phrases] == [("mild cardiomegaly", "rules:iu_xray")]
    assert report.fixed_by_reason()["no_radgraph"] == 14


def test_views_table_orders_frontal_first(openi, tmp_path):
    reports, images = openi
    views = tmp_path / "indiana_projections.csv"
    views.write_text("uid,filename,projection\n1,1_IM-0001-4001.dcm.png,Frontal\n1,1_IM-0001-3001.dcm.png,Lateral\n")
    manifest, _ = prepare_iu_xray(reports, images, tmp_path / "out", reference="none", views_csv=views)
    one = {s.id: s for s in read_manifest(manifest)}["CXR1_IM-0001"]
    assert one.views == ("FRONTAL", "LATERAL")
    assert [p.rsplit("/", 1)[1] for p in one.images] == ["CXR1_IM-0001-4001.png", "CXR1_IM-0001-3001.png"]
    views.write_text("a,b\n1,2\n")
    with pytest.raises(PrepareError, match="expected an image column"):
        prepare_iu_xray(reports, images, tmp_path / "out", reference="none", views_csv=views)


def test_retrieval_references_come_from_train_and_are_cached(openi, tmp_path, tiny_vision, monkeypatch):
    reports, images = openi
    out = tmp_path / "out"
    manifest, report = prepare_iu_xray(reports, images, out, vision_model=str(tiny_vision))
    studies = read_manifest(manifest)
    split_of = {s.id: s.split for s in studies}
    assert all(s.reference_id is not None and s.reference_id != s.id for s in studies)
    assert all(split_of[s.reference_id] == "train" for s in studies)
    assert report.notes["references"] == {"retrieval": 15, "none": 0}
    assert len(list((out / "cache").glob("embeddings-*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the second run must reuse the cached embeddings")

    monkeypatch.setattr("s2d_align.models.vision.load_vision_encoder", refuse)
    again, _ = prepare_iu_xray(reports, images, out, vision_model=str(tiny_vision))
    assert [s.reference_id for s in read_manifest(again)] == [s.reference_id for s in studies]


def _annotation(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_prepare_with_r2gen_annotation(openi, tmp_path):
    reports, images = openi
    r2gen_layout = images / "r2gen" / "CXR12_IM-0012"
    r2gen_layout.mkdir(parents=True)
    for k in (0, 1):
        Image.new("L", (32, 32), 90 + k).save(r2gen_layout / f"{k}.png")
    entry = lambda id, split, paths=None: {
        "id": id, "report": "text from the annotation", "split": split,
        "image_path": paths or [f"{id}/0.png", f"{id}/1.png"],
    }
    annotation = _annotation(tmp_path / "annotation.json", {
        "train": [entry("CXR1_IM-0001", "train"), entry("CXR10_IM-0010", "train"),
                  entry("CXR12_IM-0012", "train", ["r2gen/CXR12_IM-0012/0.png", "r2gen/CXR12_IM-0012/1.png"]),
                  entry("CXR999_IM-9999", "train")],
        "val": [entry("CXR2_IM-0652", "val")],
        "": [entry("CXR11_IM-0011", "test")],  # the known quirk: a blank key for the test list
    })
    out = tmp_path / "out"
    manifest, report = prepare_iu_xray(reports, images, out, annotation=annotation, reference="none")
    studies = {s.id: s for s in read_manifest(manifest)}
    assert {k: s.split for k, s in studies.items()} == {
        "CXR1_IM-0001": "train", "CXR10_IM-0010": "train", "CXR12_IM-0012": "train",
        "CXR2_IM-0652": "val", "CXR11_IM-0011": "test",
    }
    assert [p.rsplit("/", 1)[1] for p in studies["CXR1_IM-0001"].images] == ["CXR1_IM-0001-3001.png", "CXR1_IM-0001-4001.png"]
    assert [p.rsplit("/", 2)[1:] for p in studies["CXR12_IM-0012"].images] == [["CXR12_IM-0012", "0.png"], ["CXR12_IM-0012", "1.png"]]
    assert studies["CXR1_IM-0001"].findings.startswith("The heart is normal.")  # the XML wins over the annotation
    assert studies["CXR2_IM-0652"].findings == "Mild cardiomegaly. No effusion."  # 2.xml, not its repeat 20.xml
    data = report.to_json()
    assert data["skipped_ids"]["duplicate_id"] == ["CXR2_IM-0652@20.xml"]
    assert data["notes"]["annotation"] == {"entries": 6, "split_from_entry": 1, "split_key_renamed": 0}
    assert data["skipped_ids"]["no_usable_images"] == ["CXR999_IM-9999"]
    assert data["skipped_by_reason"]["not_in_annotation"] == 13
    assert "CXR3" in data["skipped_ids"]["not_in_annotation"]


def test_annotation_that_shares_a_patient_across_splits_fails_loudly(openi, tmp_path):
    reports, images = openi
    annotation = _annotation(tmp_path / "a.json", {
        "train": [{"id": "CXR1_IM-0001", "report": "x", "image_path": ["a.png"]}],
        "test": [{"id": "CXR1_IM-0002", "report": "x", "image_path": ["b.png"]}],
    })
    with pytest.raises(LeakageError, match=r"patient CXR1: test \(CXR1_IM-0002\), train \(CXR1_IM-0001\)"):
        prepare_iu_xray(reports, images, tmp_path / "out", annotation=annotation, reference="none")


def test_malformed_inputs(openi, tmp_path):
    reports, images = openi
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="no report XML found"):
        prepare_iu_xray(empty, images, tmp_path / "out", reference="none")
    with pytest.raises(PrepareError, match="no PNG, JPEG or DICOM image here"):
        prepare_iu_xray(reports, empty, tmp_path / "out", reference="none")
    bad = _annotation(tmp_path / "bad.json", {"": [{"id": "CXR1_IM-0001", "report": "x", "image_path": []}]})
    with pytest.raises(PrepareError, match="names no split and the entry has no usable 'split' field"):
        prepare_iu_xray(reports, images, tmp_path / "out", annotation=bad, reference="none")


def test_cli_reads_the_tgz_and_retrieves(openi, tmp_path, tiny_vision, capsys):
    reports, images = openi
    archive = tmp_path / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(reports, arcname="ecgen-radiology")
    out = tmp_path / "cli"
    code = main([
        "prepare", "iu-xray", "--reports", str(archive), "--images", str(images), "--out", str(out),
        "--vision-model", str(tiny_vision), "--seed", "1",
    ])
    assert code == 0
    assert "iu-xray: kept 15 (test 4, train 10, val 1), skipped 5" in capsys.readouterr().out
    assert all(s.reference_id for s in read_manifest(out / "manifest.jsonl"))


# --------------------------------------------------------------------------- the real Open-i reports


@pytest.fixture(scope="module")
def real_reports(tmp_path_factory):
    """NLMCXR_reports.tgz from the torchxrayvision 1.5.7 wheel on PyPI (fetched with pip; skipped offline).

    Set S2D_NLMCXR_REPORTS to an existing copy of the archive to avoid the download.
    """
    given = os.environ.get("S2D_NLMCXR_REPORTS")
    if given:
        return given
    folder = tmp_path_factory.mktemp("txv")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "torchxrayvision==1.5.7", "--no-deps", "-d", str(folder), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    wheels = list(folder.glob("torchxrayvision-1.5.7-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"PyPI unreachable, cannot fetch torchxrayvision==1.5.7: {result.stderr.strip()[-200:]}")
    import zipfile

    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.extract("torchxrayvision/data/NLMCXR_reports.tgz", folder)


def test_real_openi_reports(real_reports, tmp_path):
    report = PrepareReport("iu-xray")
    parsed = read_reports(real_reports, report)
    assert len(parsed) == 3955 and report.skipped == 0
    assert sum(1 for r in parsed if r.findings) == 3425
    assert sum(1 for r in parsed if r.image_ids) == 3851
    assert sum(len(r.image_ids) for r in parsed) == 7470
    # blank stand-in PNGs for every image id (not Open-i pixels), then the whole builder
    images = tmp_path / "png"
    images.mkdir()
    blank = tmp_path / "blank.png"
    Image.new("L", (8, 8)).save(blank)
    data = blank.read_bytes()
    for item in parsed:
        for image in item.image_ids:
            (images / f"{image}.png").write_bytes(data)
    out = tmp_path / "out"
    manifest, built = prepare_iu_xray(real_reports, images, out, reference="none", check_images="header")
    studies = read_manifest(manifest)
    result = built.to_json()
    print(json.dumps({k: result[k] for k in ("kept", "kept_by_split", "skipped_by_reason", "fixed_by_reason")}))
    assert result["kept"] == len(studies) == 3337
    assert result["kept_by_split"] == {"test": 685, "train": 2340, "val": 312}
    assert result["skipped_by_reason"] == {"no_findings": 514, "no_images": 104}
    assert len({s.subject_id for s in studies}) == 3337  # one study per report, hence per patient
