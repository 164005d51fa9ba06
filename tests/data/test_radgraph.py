import pytest

from s2d_align.data.key_phrases import NoRefiner, compose_phrases
from s2d_align.data.radgraph import RadGraphError, iter_annotations, normalise_label, parse_annotation

# "small right pleural effusion . opacity in the left lower lobe suggestive of pneumonia . no pneumothorax ."
ANNOTATION = {
    "text": "small right pleural effusion . opacity in the left lower lobe suggestive of pneumonia . no pneumothorax .",
    "entities": {
        "1": {"tokens": "small", "label": "OBS-DP", "start_ix": 0, "end_ix": 0, "relations": [["modify", "4"]]},
        "2": {"tokens": "right", "label": "ANAT-DP", "start_ix": 1, "end_ix": 1, "relations": [["modify", "3"]]},
        "3": {"tokens": "pleural", "label": "ANAT-DP", "start_ix": 2, "end_ix": 2, "relations": []},
        "4": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3, "end_ix": 3, "relations": [["located_at", "3"]]},
        "5": {"tokens": "opacity", "label": "OBS-DP", "start_ix": 5, "end_ix": 5,
              "relations": [["located_at", "8"], ["suggestive_of", "9"]]},
        "6": {"tokens": "left", "label": "ANAT-DP", "start_ix": 8, "end_ix": 8, "relations": [["modify", "8"]]},
        "7": {"tokens": "lower", "label": "ANAT-DP", "start_ix": 9, "end_ix": 9, "relations": [["modify", "8"]]},
        "8": {"tokens": "lobe", "label": "ANAT-DP", "start_ix": 10, "end_ix": 10, "relations": []},
        "9": {"tokens": "pneumonia", "label": "Observation::uncertain", "start_ix": 13, "end_ix": 13, "relations": []},
        "10": {"tokens": "pneumothorax", "label": "OBS-DA", "start_ix": 16, "end_ix": 16, "relations": []},
    },
}


def test_label_names():
    assert normalise_label("Observation::definitely present") == "OBS-DP"
    assert normalise_label("Anatomy::definitely absent") == "ANAT-DA"
    assert normalise_label("OBS-U") == "OBS-U"
    with pytest.raises(RadGraphError, match="unknown RadGraph label"):
        normalise_label("Finding::maybe")


def test_compose_positive_observations_with_modifiers_and_location():
    annotation = parse_annotation(ANNOTATION)
    assert compose_phrases(annotation) == [
        "small effusion in right pleural",
        "opacity in left lower lobe, suggestive of pneumonia",
    ]
    assert [k.source for k in NoRefiner().refine(["x"])] == ["radgraph:composed"]


def test_labeler_nesting_and_malformed_entries():
    nested = {"text": ANNOTATION["text"], "labeler_1": {"entities": ANNOTATION["entities"]}}
    assert parse_annotation(nested).entities.keys() == ANNOTATION["entities"].keys()
    broken = {"r1": nested, "r2": {"text": "x", "entities": {"1": {"tokens": "x", "label": "OBS-DP"}}}}
    results = dict(iter_annotations(broken))
    assert not isinstance(results["r1"], RadGraphError)
    assert isinstance(results["r2"], RadGraphError) and "entity '1' is malformed" in str(results["r2"])
