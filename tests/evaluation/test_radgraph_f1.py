"""RadGraph F1 (RG_E, RG_ER, RG_ER-bar) on hand-made annotations, v1 and RadGraph-XL label names."""

import json

import pytest

from s2d_align.data.radgraph import RadGraphError, parse_annotation
from s2d_align.evaluation.radgraph_f1 import load_annotation_files, radgraph_scores, report_scores
from s2d_align.evaluation.report import evaluate_file, evaluate_records


def entity(tokens, label, start, relations=()):
    return {"tokens": tokens, "label": label, "start_ix": start, "end_ix": start, "relations": [list(r) for r in relations]}


# "small right pleural effusion . no pneumothorax" (RadGraph v1 labels)
REFERENCE = {"text": "small right pleural effusion . no pneumothorax", "entities": {
    "1": entity("small", "OBS-DP", 0, [("modify", "4")]),
    "2": entity("right", "ANAT-DP", 1, [("modify", "3")]),
    "3": entity("pleural", "ANAT-DP", 2),
    "4": entity("effusion", "OBS-DP", 3, [("located_at", "3")]),
    "5": entity("pneumothorax", "OBS-DA", 6),
}}
# "right pleural Effusion . no pneumothorax . cardiomegaly" (RadGraph-XL labels)
PREDICTION = {"text": "right pleural Effusion . no pneumothorax . cardiomegaly", "entities": {
    "1": entity("right", "Anatomy::definitely present", 0, [("modify", "2")]),
    "2": entity("pleural", "Anatomy::definitely present", 1),
    "3": entity("Effusion", "Observation::definitely present", 2, [("located_at", "2")]),
    "4": entity("pneumothorax", "Observation::definitely absent", 5),
    "5": entity("cardiomegaly", "Observation::definitely present", 7),
}}
EMPTY = {"text": "", "entities": {}}
# Two reference entities, one of them predicted: P 1, R 1/2, F1 2/3 at every level.
SHORT_REF = {"text": "mild cardiomegaly", "entities": {"1": entity("mild", "OBS-DP", 0), "2": entity("cardiomegaly", "OBS-DP", 1)}}
SHORT_PRED = {"text": "cardiomegaly", "entities": {"1": entity("cardiomegaly", "OBS-DP", 0)}}


def test_hand_counted_scores():
    # RG_E: 5 vs 5 entities, 3 shared ("Effusion" differs in case) -> 0.6
    # RG_ER: the same 3 shared with the same has-a-relation flag -> 0.6
    # RG_ER-bar: relation tuples are lower-cased, so effusion-located_at-pleural matches too -> 4/5, which
    # the reference formula 2PR/(P+R) evaluates in floating point to 0.8000000000000002
    assert report_scores(parse_annotation(REFERENCE), parse_annotation(PREDICTION)) == (0.6, 0.6, 0.8000000000000002)
    assert report_scores(parse_annotation(SHORT_REF), parse_annotation(SHORT_PRED)) == (2 / 3, 2 / 3, 2 / 3)
    assert report_scores(parse_annotation(REFERENCE), parse_annotation(EMPTY)) == (0.0, 0.0, 0.0)
    assert report_scores(parse_annotation(EMPTY), parse_annotation(EMPTY)) == (0.0, 0.0, 0.0)


def test_mean_over_reports():
    scores = radgraph_scores([
        ("a", parse_annotation(REFERENCE), parse_annotation(PREDICTION)),
        ("b", parse_annotation(REFERENCE), parse_annotation(EMPTY)),
    ])
    assert {k: v.mean() for k, v in scores.items()} == {"rg_e": 0.3, "rg_er": 0.3, "rg_er_bar": 0.4000000000000001}


def test_relation_to_a_missing_entity_is_an_error():
    broken = json.loads(json.dumps(PREDICTION))
    broken["entities"]["3"]["relations"] = [["located_at", "99"]]
    with pytest.raises(RadGraphError, match="entity '3' has a 'located_at' relation to missing entity '99'"):
        report_scores(parse_annotation(REFERENCE), parse_annotation(broken), "id 'a'")


RECORDS = [
    {"id": "a", "reference": "Small right pleural effusion. No pneumothorax.", "prediction": "Right pleural effusion."},
    {"id": "b", "reference": "Mild cardiomegaly.", "prediction": "Cardiomegaly."},
]


def write_predictions(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def test_evaluate_with_paired_annotations(tmp_path):
    annotations = tmp_path / "rg.json"
    annotations.write_text(json.dumps({"a": {"reference": REFERENCE, "prediction": PREDICTION},
                                       "b": {"reference": SHORT_REF, "prediction": SHORT_PRED}}))
    metrics = evaluate_file(write_predictions(tmp_path), tmp_path / "m.json", metrics="radgraph",
                            radgraph_annotations=annotations, resamples=100)
    assert metrics["rg_e"] == pytest.approx((0.6 + 2 / 3) / 2, abs=1e-15)
    assert metrics["rg_er_bar"] == pytest.approx((0.8 + 2 / 3) / 2, abs=1e-15)
    assert set(metrics["confidence_intervals"]) == {"rg_e", "rg_er", "rg_er_bar"}
    assert "radgraph" not in metrics["not_run"]


def test_evaluate_with_two_radgraph_files_nested_by_labeler(tmp_path):
    reference = tmp_path / "ref.json"
    prediction = tmp_path / "pred.json"
    reference.write_text(json.dumps({"a": {"text": REFERENCE["text"], "labeler_1": {"entities": REFERENCE["entities"]}},
                                     "b": SHORT_REF}))
    prediction.write_text(json.dumps({"a": PREDICTION, "b": SHORT_PRED}))
    metrics = evaluate_file(write_predictions(tmp_path), tmp_path / "m.json", metrics="radgraph",
                            radgraph_reference=reference, radgraph_prediction=prediction, resamples=0)
    assert (metrics["rg_e"], metrics["rg_er"]) == (pytest.approx((0.6 + 2 / 3) / 2), pytest.approx((0.6 + 2 / 3) / 2))


def test_annotation_coverage_errors(tmp_path):
    reference = tmp_path / "ref.json"
    prediction = tmp_path / "pred.json"
    reference.write_text(json.dumps({"a": REFERENCE, "b": SHORT_REF}))
    prediction.write_text(json.dumps({"a": PREDICTION}))
    # Files may cover extra ids; an evaluated id without both sides is named when scoring.
    assert set(load_annotation_files(reference, prediction)) == {"a"}
    with pytest.raises(ValueError, match=r"missing for 1 id\(s\), e.g. \['b'\]"):
        evaluate_file(write_predictions(tmp_path), tmp_path / "m.json", metrics="radgraph",
                      radgraph_reference=reference, radgraph_prediction=prediction)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"a": PREDICTION, "b": SHORT_PRED, "z": SHORT_PRED}))
    assert set(load_annotation_files(reference, extra)) == {"a", "b"}
    partial = {"a": (parse_annotation(REFERENCE), parse_annotation(PREDICTION))}
    with pytest.raises(ValueError, match=r"missing for 1 id\(s\), e.g. \['b'\]"):
        evaluate_records(RECORDS, metrics="radgraph", radgraph=partial)
    lonely = tmp_path / "lonely.json"
    lonely.write_text(json.dumps({"a": {"reference": REFERENCE}}))
    with pytest.raises(RadGraphError, match="id 'a' needs both 'reference' and 'prediction'"):
        evaluate_file(write_predictions(tmp_path), tmp_path / "m.json", metrics="radgraph", radgraph_annotations=lonely)
