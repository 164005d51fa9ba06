import numpy as np
import pytest

from s2d_align.data.leakage import LeakageError, annotation_matches_report, check_manifest, check_patient_disjoint
from s2d_align.data.manifest import Study
from s2d_align.data.references import (
    EmbeddingCache,
    nearest_training_references,
    prior_study_references,
    representative_image,
)


def _study(id, subject, time, split="train", **extra):
    fields = {"images": ("x.png",), "findings": "f", "study_time": time, **extra}
    return Study(id=id, split=split, subject_id=subject, study_id=id, **fields)


def test_prior_study_is_the_latest_strictly_earlier_one():
    studies = [
        _study("s9", "p1", "2180-03-01T00:00:00"),
        _study("s1", "p1", "2180-01-01T00:00:00"),
        _study("s5", "p1", "2180-02-01T00:00:00"),
        _study("s7", "p1", "2180-02-01T00:00:00"),  # same instant as s5: neither is the other's prior
        _study("s2", "p2", None),  # no time: cannot be ordered
        _study("s3", "p2", "2180-01-01T00:00:00"),
        _study("s4", "p3", "2180-01-01T00:00:00"),
        _study("s6", "p4", "2180-02-01T10:00:00"),
        _study("s8", "p4", "2180-02-01T09:00:00"),  # the higher id is the earlier study
    ]
    assert prior_study_references(studies) == {
        "s9": "s7", "s1": None, "s5": "s1", "s7": "s1", "s2": None, "s3": None, "s4": None, "s6": "s8", "s8": None,
    }


def test_training_study_never_takes_an_evaluation_reference():
    studies = [_study("a", "p1", "2180-01-01T00:00:00", split="test"), _study("b", "p1", "2180-02-01T00:00:00")]
    assert prior_study_references(studies) == {"a": None, "b": None}
    studies = [_study("a", "p1", "2180-01-01T00:00:00"), _study("b", "p1", "2180-02-01T00:00:00", split="val")]
    assert prior_study_references(studies) == {"a": None, "b": "a"}


def test_retrieval_takes_the_nearest_training_study_never_itself():
    ids = ["t1", "t2", "t3", "v1", "x"]
    splits = ["train", "train", "train", "val", "test"]
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.95, 0.05], [0, 0]], dtype=np.float32)
    vectors[:4] /= np.linalg.norm(vectors[:4], axis=1, keepdims=True)
    assert nearest_training_references(ids, splits, ids, vectors, chunk=2) == {
        "t1": "t2", "t2": "t1", "t3": "t2", "v1": "t1", "x": None,
    }
    assert nearest_training_references(["a"], ["train"], ["p"], np.ones((1, 2))) == {"a": None}


def test_retrieval_never_takes_a_study_of_the_same_patient():
    ids = ["t1", "t2", "t3", "v1"]
    splits = ["train", "train", "train", "val"]
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.95, 0.05]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # t1 and t2 are one patient's studies, v1 is t1's patient too: each must look past its own patient
    assert nearest_training_references(ids, splits, ["p1", "p1", "p3", "p1"], vectors, chunk=3) == {
        "t1": "t3", "t2": "t3", "t3": "t2", "v1": "t3",
    }
    assert nearest_training_references(["a", "b"], ["train", "train"], ["p", "p"], np.eye(2)) == {"a": None, "b": None}


def test_representative_image_prefers_the_frontal_view():
    study = _study("a", "p", None, images=("l.png", "f.png"), views=("LATERAL", "PA"))
    assert representative_image(study) == [1]
    assert representative_image(_study("b", "p", None, images=("1", "2"), views=("UNKNOWN", "UNKNOWN"))) == [0, 1]
    assert representative_image(_study("c", "p", None, images=("l", "f"), views=("LATERAL", "AP AXIAL"))) == [1]


def test_embedding_cache_round_trip(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    cache = EmbeddingCache(tmp_path / "c.npz", "model")
    key = cache.key(image)
    cache.put(key, np.array([0.6, 0.8]))
    cache.put_failure("broken")
    cache.save()
    again = EmbeddingCache(tmp_path / "c.npz", "model")
    assert np.allclose(again.get(key), [0.6, 0.8]) and "broken" in again and again.get("broken") is None
    assert EmbeddingCache(tmp_path / "c.npz", "other").key(image) != key
    image.write_bytes(b"changed")
    assert again.key(image) != key


def test_guards():
    check_patient_disjoint([("p1", "train", "a"), ("p1", "train", "b"), ("p2", "test", "c")], "m")
    with pytest.raises(LeakageError, match=r"m: the split is not patient-disjoint: 1 patient\(s\).*patient p1: test \(b\), train \(a\)"):
        check_patient_disjoint([("p1", "train", "a"), ("p1", "test", "b")], "m")
    good = [_study("a", "p1", None), _study("b", "p2", None, reference_id="a"), _study("c", "p3", None, split="val", reference_id="a")]
    check_manifest(good, "m")
    with pytest.raises(LeakageError, match="training study b takes its reference from val study c"):
        check_manifest([_study("c", "p3", None, split="val"), _study("b", "p2", None, reference_id="c")], "m")
    with pytest.raises(LeakageError, match="a is its own reference"):
        check_manifest([_study("a", "p1", None, reference_id="a")], "m")


def test_annotation_text_matches_its_report():
    assert annotation_matches_report("FINDINGS : Lungs are clear . IMPRESSION : Normal .", "Lungs are clear.", "Normal.")
    assert annotation_matches_report("Lungs are clear .", "Lungs are clear. Heart normal.", None)
    assert not annotation_matches_report("Large right effusion .", "Lungs are clear.", "Normal.")
    assert not annotation_matches_report("", "Lungs are clear.", None)
