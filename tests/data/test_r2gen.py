import json

import pytest
from PIL import Image

from s2d_align.cli import main
from s2d_align.data.leakage import LeakageError
from s2d_align.data.manifest import Study, read_manifest, write_manifest
from s2d_align.data.prepare_report import PrepareError, PrepareReport
from s2d_align.data.r2gen import Entry, export_annotation, prepare_r2gen, read_annotation


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_read_annotation_quirks(tmp_path):
    path = _write(tmp_path / "a.json", {
        "train": [{"id": "a", "report": "r", "image_path": ["a/0.png"], "split": "train"}],
        "validate": [{"id": "b", "report": "r", "image_path": "b/0.png"}],
        "": [{"id": "c", "report": "r", "image_path": [], "split": "test"}],
    })
    entries, quirks = read_annotation(path)
    assert entries == [
        Entry("a", "r", ("a/0.png",), "train"), Entry("b", "r", ("b/0.png",), "val"), Entry("c", "r", (), "test"),
    ]
    assert quirks == {"split_from_entry": 1, "split_key_renamed": 1}
    with pytest.raises(PrepareError, match="expected R2Gen's layout"):
        read_annotation(_write(tmp_path / "b.json", [1, 2]))
    with pytest.raises(PrepareError, match="no such annotation file"):
        read_annotation(tmp_path / "missing.json")


def _mimic_images(root):
    paths = []
    for study, dicoms in (("50000001", ("d1", "d2")), ("50000002", ("d3",)), ("50000003", ("d4",))):
        folder = root / "p10" / "p10000001" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        for dicom in dicoms:
            Image.new("L", (8, 8)).save(folder / f"{dicom}.jpg")
            paths.append(f"p10/p10000001/s{study}/{dicom}.jpg")
    return paths


def test_import_mimic_annotation_groups_images_by_study_and_round_trips(tmp_path):
    images = tmp_path / "files"
    paths = _mimic_images(images)
    entry = lambda dicom, study, path, report="Lungs are clear.": {
        "id": dicom, "study_id": int(study), "subject_id": 10000001, "report": report, "image_path": [path],
        "split": "train",
    }
    annotation = _write(tmp_path / "annotation.json", {
        "train": [entry("d1", "50000001", paths[0]), entry("d2", "50000001", paths[1]),
                  entry("d3", "50000002", paths[2], "Small effusion."), entry("d4", "50000003", paths[3], "")],
        "val": [], "test": [],
    })
    out = tmp_path / "out"
    manifest, report = prepare_r2gen(annotation, images, out)
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == {"s50000001", "s50000002"}
    assert len(studies["s50000001"].images) == 2 and studies["s50000001"].subject_id == "10000001"
    assert report.skipped_by_reason() == {"no_findings": 1}
    assert report.source == "r2gen:mimic_cxr"

    exported = tmp_path / "exported.json"
    assert main(["export", "r2gen", "--manifest", str(manifest), "--out", str(exported), "--image-root", str(images)]) == 0
    data = json.loads(exported.read_text())
    assert data["train"][0] == {
        "id": "s50000001", "report": "Lungs are clear.", "split": "train", "study_id": 50000001,
        "subject_id": 10000001, "image_path": paths[:2],
    }
    count, _ = export_annotation(read_manifest(manifest), manifest, tmp_path / "per_image.json", images, per_image=True)
    per_image = json.loads((tmp_path / "per_image.json").read_text())
    assert count == 3 and [e["id"] for e in per_image["train"]] == ["d1", "d2", "d3"]
    # and back: importing the per-image export gives the same studies
    again, _ = prepare_r2gen(tmp_path / "per_image.json", images, tmp_path / "again")
    assert {s.id: (s.images, s.findings) for s in read_manifest(again)} == {
        k: (s.images, s.findings) for k, s in studies.items()
    }


def test_export_iu_style_paths_are_relative_to_their_common_folder(tmp_path):
    images = tmp_path / "images"
    for study in ("CXR1_IM-0001", "CXR2_IM-0002"):
        (images / study).mkdir(parents=True)
        for k in (0, 1):
            Image.new("L", (8, 8)).save(images / study / f"{k}.png")
    studies = [
        Study(id=s, split=split, subject_id=s.split("_")[0], study_id=s, findings=f"report {s}",
              images=(f"images/{s}/0.png", f"images/{s}/1.png"))
        for s, split in (("CXR1_IM-0001", "train"), ("CXR2_IM-0002", "test"))
    ]
    write_manifest(tmp_path / "m.jsonl", studies)
    count, root = export_annotation(studies, tmp_path / "m.jsonl", tmp_path / "a.json")
    assert count == 2 and root == images.resolve()
    data = json.loads((tmp_path / "a.json").read_text())
    assert data == {
        "train": [{"id": "CXR1_IM-0001", "report": "report CXR1_IM-0001", "split": "train",
                   "image_path": ["CXR1_IM-0001/0.png", "CXR1_IM-0001/1.png"]}],
        "val": [],
        "test": [{"id": "CXR2_IM-0002", "report": "report CXR2_IM-0002", "split": "test",
                  "image_path": ["CXR2_IM-0002/0.png", "CXR2_IM-0002/1.png"]}],
    }
    manifest, _ = prepare_r2gen(tmp_path / "a.json", images, tmp_path / "out", dataset="iu_xray")
    assert [(s.id, s.subject_id, s.split) for s in read_manifest(manifest)] == [
        ("CXR1_IM-0001", "CXR1", "train"), ("CXR2_IM-0002", "CXR2", "test"),
    ]


def test_prepare_report_ledger(tmp_path):
    report = PrepareReport("x", {"a": 1})
    report.fix("s1", "report_not_utf8", "s1.txt")
    report.fix("s2", "image_dropped:truncated", "b.jpg")
    report.skip("s2", "no_usable_images", "truncated")
    report.skip("s2", "no_findings")  # the first reason counts
    report.skip("s3", "no_findings", "s3.txt")
    report.keep_all([("s1", "train"), ("s4", "test")])
    data = json.loads(report.write(tmp_path).read_text())
    assert (data["kept"], data["kept_by_split"], data["skipped"]) == (2, {"test": 1, "train": 1}, 2)
    assert data["skipped_by_reason"] == {"no_findings": 1, "no_usable_images": 1}
    assert data["skipped_ids"] == {"no_findings": ["s3"], "no_usable_images": ["s2"]}
    assert data["fixed_by_reason"] == {"report_not_utf8": 1}  # fixes of skipped records do not count
    assert data["details"] == {"no_findings": ["s3: s3.txt"], "no_usable_images": ["s2: truncated"],
                               "report_not_utf8": ["s1: s1.txt"]}
    assert report.summary().splitlines() == [
        "x: kept 2 (test 1, train 1), skipped 2",
        "  skipped       1  no_findings",
        "  skipped       1  no_usable_images",
        "  fixed         1  report_not_utf8",
    ]


def test_import_refuses_a_study_in_two_splits(tmp_path):
    images = tmp_path / "files"
    paths = _mimic_images(images)
    entry = lambda dicom, path, split: {
        "id": dicom, "study_id": 50000001, "subject_id": 10000001, "report": "x", "image_path": [path], "split": split,
    }
    annotation = _write(tmp_path / "a.json", {"train": [entry("d1", paths[0], "train")], "test": [entry("d2", paths[1], "test")]})
    with pytest.raises(LeakageError, match=r"patient 10000001: test \(d2\), train \(d1\)"):
        prepare_r2gen(annotation, images, tmp_path / "out")


def test_import_skips_entries_whose_images_leave_the_images_folder(tmp_path):
    images = tmp_path / "images"
    for study in ("CXR1_IM-0001", "CXR2_IM-0002", "CXR3_IM-0003"):
        (images / study).mkdir(parents=True)
        Image.new("L", (8, 8)).save(images / study / "0.png")
    secret = tmp_path / "secret.png"
    Image.new("L", (8, 8)).save(secret)
    _write(tmp_path / "a.json", {
        "train": [{"id": "CXR1_IM-0001", "report": "r one", "image_path": ["CXR1_IM-0001/0.png"]},
                  {"id": "CXR2_IM-0002", "report": "r two", "image_path": ["../secret.png"]}],
        "val": [{"id": "CXR3_IM-0003", "report": "r three", "image_path": [str(secret)]}],
        "test": [],
    })
    manifest, report = prepare_r2gen(tmp_path / "a.json", images, tmp_path / "out", dataset="iu_xray")
    assert [s.id for s in read_manifest(manifest)] == ["CXR1_IM-0001"]
    assert report.skipped_by_reason() == {"image_outside_root": 2}
