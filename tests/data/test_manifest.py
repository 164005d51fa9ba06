import json

import pytest

from s2d_align.data.manifest import KeyPhrase, ManifestError, Study, read_manifest, write_manifest


def _study(**changes):
    base = dict(
        id="s1", split="train", subject_id="p1", study_id="s1", images=("images/a.png",), findings="no effusion .",
        views=("PA",), study_time="2020-01-01T10:00:00", key_phrases=(KeyPhrase("small effusion", "rules"),),
        labels={"Pleural Effusion": 0, "No Finding": None},
    )
    base.update(changes)
    return Study(**base)


def test_round_trip(tmp_path):
    studies = [_study(), _study(id="s2", study_id="s2", reference_id="s1", radgraph={"text": "x", "entities": {}})]
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, studies) == 2
    back = read_manifest(path)
    assert back == studies
    assert back[1].radgraph == {"text": "x", "entities": {}}


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": "a"}, "lacks split, subject_id, study_id, images, findings"),
        ({"split": "validate"}, "split 'validate'"),
        ({"images": []}, "images must be a non-empty list"),
        ({"labels": {"Edema": 2}}, "labels must map"),
        ({"colour": "red"}, "unknown fields"),
        ({"reference_id": "missing"}, "names no study"),
    ],
)
def test_bad_records_name_the_line(tmp_path, record, message):
    good = _study().to_json()
    if record == {"id": "a"}:
        bad = record
    else:
        bad = {**good, "id": "b", **record}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_duplicates_and_bad_json(tmp_path):
    path = tmp_path / "m.jsonl"
    line = json.dumps(_study().to_json())
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: duplicate id 's1' \(first on line 1\)"):
        read_manifest(path)
    path.write_text(line + "\n{oops\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not valid JSON"):
        read_manifest(path)
    path.write_text("\n")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(path)


def test_image_paths_must_stay_inside_the_manifest_folder_or_a_given_root(tmp_path):
    from s2d_align.data.manifest import ManifestError, check_image_paths, outside_roots

    manifest = tmp_path / "data" / "manifest.jsonl"
    manifest.parent.mkdir()
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert not outside_roots(manifest, "images/a.png")
    assert not outside_roots(manifest, "linked/a.png")  # a linked image folder stays inside
    assert not outside_roots(manifest, str(tmp_path / "data" / "images" / "a.png"))
    assert outside_roots(manifest, "../secret.png")
    assert outside_roots(manifest, "images/../../secret.png")
    assert outside_roots(manifest, "/etc/passwd")
    assert not outside_roots(manifest, "/srv/xray/p10/a.jpg", roots=["/srv/xray"])
    assert outside_roots(manifest, "/srv/xray-other/a.jpg", roots=["/srv/xray"])
    study = Study(id="s1", split="train", subject_id="p", study_id="s1", images=("/etc/passwd",), findings="f")
    with pytest.raises(ManifestError, match=r"(?s)1 image path\(s\) lie outside .*\n  s1: /etc/passwd\n"):
        check_image_paths([study], manifest)
    check_image_paths([study], manifest, allow_absolute=True)
    check_image_paths([study], manifest, roots=["/etc"])
