import gzip
import json

import pytest
from tests.data.realdata_fixtures import (
    MIMIC_EXPECTED_FINDINGS,
    MIMIC_EXPECTED_IMPRESSIONS,
    write_csv_gz,
    write_mimic_radgraph,
    write_mimic_tree,
)

from s2d_align.cli import main
from s2d_align.data.leakage import LeakageError
from s2d_align.data.manifest import read_manifest
from s2d_align.data.mimic_cxr import prepare_mimic_cxr, radgraph_study_key, study_time
from s2d_align.data.prepare_report import PrepareError
from s2d_align.data.views import FRONTAL_VIEWS


@pytest.fixture()
def tree(tmp_path):
    return write_mimic_tree(tmp_path / "raw")


def _report(out):
    return json.loads((out / "prepare_report.json").read_text())


def test_study_time_parses_numeric_times():
    assert study_time("21800305", "70808.0") == "2180-03-05T07:08:08"
    assert study_time("21800101", "235959.999") == "2180-01-01T23:59:59.999000"
    assert study_time("21810101", "120000") == "2181-01-01T12:00:00"
    assert study_time("", "120000") is None
    assert study_time("2180xx01", "1") is None


def test_radgraph_keys():
    assert radgraph_study_key("p10/p10000032/s50414267.txt") == "s50414267"
    assert radgraph_study_key("s50414267") == "s50414267"
    assert radgraph_study_key("50414267") == "s50414267"
    assert radgraph_study_key("patient64711/study1/view1_frontal.jpg") is None


def test_prepare_keeps_fixes_and_skips_with_reasons(tree, tmp_path):
    jpg, reports = tree
    out = tmp_path / "out"
    manifest, _ = prepare_mimic_cxr(jpg, reports, out)
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == set(MIMIC_EXPECTED_FINDINGS)
    assert {k: s.findings for k, s in studies.items()} == MIMIC_EXPECTED_FINDINGS
    assert {k: s.impression for k, s in studies.items()} == MIMIC_EXPECTED_IMPRESSIONS
    assert {k: s.split for k, s in studies.items()} == {
        "s50000001": "train", "s50000002": "train", "s50000003": "train",
        "s50000007": "val", "s50000008": "val", "s50000009": "test",
    }
    # prior-study references by time, not by id (s50000003 is this patient's earliest study); none without one
    assert {k: s.reference_id for k, s in studies.items()} == {
        "s50000001": "s50000003", "s50000002": "s50000001", "s50000003": None,
        "s50000007": None, "s50000008": "s50000007", "s50000009": None,
    }
    s1 = studies["s50000001"]
    assert s1.views == ("PA", "LATERAL")  # frontal first
    assert [p.rsplit("/", 1)[1] for p in s1.images] == ["d1-pa.jpg", "d1-lat.jpg"]
    assert all(p.startswith(str(jpg.resolve())) for p in s1.images)  # absolute paths
    assert s1.subject_id == "10000001" and s1.study_id == "50000001"
    assert s1.study_time == "2180-01-01T23:59:59.999000"
    assert studies["s50000002"].study_time == "2180-03-05T07:08:08"
    assert studies["s50000003"].study_time == "2179-12-31T12:00:00"
    assert studies["s50000003"].views == ("PA", "UNKNOWN")
    assert studies["s50000008"].views == ("PA",)  # the truncated lateral was dropped
    # no RadGraph given: rule-based phrases, recorded as such
    assert [(k.text, k.source) for k in s1.key_phrases] == [("mild cardiomegaly", "rules:mimic_cxr")]

    report = _report(out)
    assert report["kept"] == 6
    assert report["kept_by_split"] == {"test": 1, "train": 3, "val": 2}
    assert report["skipped_by_reason"] == {
        "duplicate_id": 1, "empty_report": 1, "missing_report": 1, "no_findings": 1, "no_usable_images": 1,
    }
    assert report["skipped_ids"] == {
        "duplicate_id": ["s50000012"], "empty_report": ["s50000005"], "missing_report": ["s50000006"],
        "no_findings": ["s50000004"], "no_usable_images": ["s50000010"],
    }
    assert report["fixed_by_reason"] == {
        "image_dropped:truncated": 1, "no_metadata": 1, "report_not_utf8": 1,
    }
    assert report["fixed_ids"]["report_not_utf8"] == ["s50000003"]
    assert report["notes"]["references"] == {"prior_study": 3, "none": 3}


def test_frontal_views_only(tree, tmp_path):
    jpg, reports = tree
    manifest, report = prepare_mimic_cxr(jpg, reports, tmp_path / "out", views="frontal")
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == set(MIMIC_EXPECTED_FINDINGS) - {"s50000009"}
    assert all(set(s.views) <= set(FRONTAL_VIEWS) for s in studies.values())
    assert report.skipped_by_reason()["no_frontal_image"] == 1


def test_axial_and_decubitus_views_are_frontal(tmp_path):
    jpg, reports = write_mimic_tree(tmp_path / "raw", views={"d1-pa": "PA LLD", "d9-lat": "AP AXIAL"})
    manifest, _ = prepare_mimic_cxr(jpg, reports, tmp_path / "all")
    assert {s.id: s for s in read_manifest(manifest)}["s50000001"].views == ("PA LLD", "LATERAL")  # frontal first
    manifest, report = prepare_mimic_cxr(jpg, reports, tmp_path / "frontal", views="frontal")
    studies = {s.id: s for s in read_manifest(manifest)}
    assert studies["s50000001"].views == ("PA LLD",) and studies["s50000009"].views == ("AP AXIAL",)
    assert "no_frontal_image" not in report.skipped_by_reason()


def test_radgraph_excludes_unannotated_and_composes_phrases(tree, tmp_path):
    jpg, reports = tree
    out = tmp_path / "out"
    radgraph = write_mimic_radgraph(tmp_path / "radgraph.json")
    manifest, _ = prepare_mimic_cxr(jpg, reports, out, radgraph=[radgraph])
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == {"s50000001", "s50000002", "s50000007"}
    assert [(k.text, k.source) for k in studies["s50000001"].key_phrases] == [
        ("mildly enlarged in cardiac silhouette", "radgraph:composed")
    ]
    assert [k.text for k in studies["s50000002"].key_phrases] == ["Small effusion in left pleural"]
    assert [k.text for k in studies["s50000007"].key_phrases] == ["opacity in right lower lobe"]
    assert studies["s50000001"].radgraph["entities"]["4"]["label"] == "OBS-DP"
    # the reference of s50000002 was s50000001, still in the manifest
    assert studies["s50000002"].reference_id == "s50000001"
    report = _report(out)
    assert report["skipped_ids"]["no_radgraph"] == ["s50000003", "s50000008"]
    assert report["skipped_ids"]["radgraph_malformed"] == ["s50000009"]
    assert report["notes"]["radgraph"]["entries"] == 5
    assert report["notes"]["radgraph"]["entries_naming_no_mimic_report"] == 1
    assert report["notes"]["key_phrases"]["phrases_by_source"] == {"radgraph:composed": 3}


def test_radgraph_required_in_train_only(tree, tmp_path):
    jpg, reports = tree
    radgraph = write_mimic_radgraph(tmp_path / "radgraph.json")
    manifest, report = prepare_mimic_cxr(jpg, reports, tmp_path / "out", radgraph=[radgraph], require_radgraph="train")
    studies = {s.id: s for s in read_manifest(manifest)}
    assert set(studies) == {"s50000001", "s50000002", "s50000007", "s50000008", "s50000009"}
    assert [k.source for k in studies["s50000008"].key_phrases] == []  # "normal" report: no rule phrase
    assert report.skipped_by_reason()["no_radgraph"] == 1  # s50000003, a training study
    assert report.fixed_by_reason()["radgraph_malformed"] == 1


def test_retrieval_fallback_for_studies_without_an_earlier_one(tree, tiny_world, tmp_path):
    jpg, reports = tree
    vision = tiny_world.models["vision"]
    manifest, report = prepare_mimic_cxr(
        jpg, reports, tmp_path / "out", reference_fallback="retrieval", vision_model=str(vision)
    )
    studies = {s.id: s for s in read_manifest(manifest)}
    train = {"s50000001", "s50000002", "s50000003"}
    # prior studies stay; the first study of each patient retrieves a training study of another patient
    assert {k: studies[k].reference_id for k in ("s50000001", "s50000002", "s50000008")} == {
        "s50000001": "s50000003", "s50000002": "s50000001", "s50000008": "s50000007",
    }
    assert studies["s50000007"].reference_id in train and studies["s50000009"].reference_id in train
    # every training study is of s50000003's own patient: its later studies are not a reference
    assert studies["s50000003"].reference_id is None
    assert report.notes["references"] == {"prior_study": 3, "retrieval": 2, "none": 1}


def test_split_that_is_not_patient_disjoint_fails_loudly(tree, tmp_path):
    jpg, reports = tree
    rows = [["d1-pa", "50000001", "10000001", "train"], ["d2-ap", "50000002", "10000001", "test"]]
    write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], rows)
    with pytest.raises(LeakageError, match=r"not patient-disjoint.*patient 10000001: test \(s50000002\), train \(s50000001\)"):
        prepare_mimic_cxr(jpg, reports, tmp_path / "out")


def test_malformed_whole_inputs_say_what_was_expected(tree, tmp_path):
    jpg, reports = tree
    with gzip.open(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write("dicom_id,subject_id,study_id\nx,1,2\n")
    with pytest.raises(PrepareError, match=r"metadata\.csv\.gz: lacks column\(s\) ViewPosition, StudyDate, StudyTime"):
        prepare_mimic_cxr(jpg, reports, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="--jpg-root must be the MIMIC-CXR-JPG root"):
        prepare_mimic_cxr(empty, reports, tmp_path / "out")
    with pytest.raises(PrepareError, match=r"no files/pXX/ folders here; --reports"):
        write_mimic_tree(tmp_path / "again")
        prepare_mimic_cxr(tmp_path / "again" / "mimic-cxr-jpg", empty, tmp_path / "out")


def test_cli_prepare_mimic_cxr(tree, tmp_path, capsys):
    jpg, reports = tree
    out = tmp_path / "cli"
    assert main(["prepare", "mimic-cxr", "--jpg-root", str(jpg), "--reports", str(reports), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mimic-cxr: kept 6 (test 1, train 3, val 2), skipped 5" in printed
    assert len(read_manifest(out / "manifest.jsonl")) == 6
    assert main(["prepare", "mimic-cxr", "--jpg-root", str(tmp_path), "--reports", str(reports), "--out", str(out)]) == 2
    assert "--jpg-root must be the MIMIC-CXR-JPG root" in capsys.readouterr().err
