"""Clinical efficacy conventions, checked against counts worked out by hand."""

import numpy as np
import pytest

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.evaluation.clinical import clinical_efficacy, label_matrix


def labels(**values):
    out = dict.fromkeys(OBSERVATIONS)
    out.update({name.replace("_", " "): v for name, v in values.items()})
    return out


# Three reports. Uncertain-positive: TP = Cardiomegaly, Edema, No Finding, Pneumonia (4);
# FP = Pleural Effusion, Support Devices (2); FN = Atelectasis (1).
# Uncertain-negative: TP = Cardiomegaly, No Finding (2); FP = Edema, Pleural Effusion, Support Devices (3);
# FN = Pneumonia (1).
REFERENCE = label_matrix([
    labels(Cardiomegaly=1, Edema=-1, Pleural_Effusion=0),
    labels(No_Finding=1),
    labels(Atelectasis=-1, Pneumonia=1),
])
PREDICTION = label_matrix([
    labels(Cardiomegaly=1, Edema=1, Pleural_Effusion=1),
    labels(No_Finding=1, Support_Devices=1),
    labels(Pneumonia=-1),
])


@pytest.fixture(scope="module")
def ce():
    return clinical_efficacy(REFERENCE, PREDICTION)


def check(values, precision, recall, f1):
    assert values["precision"] == pytest.approx(precision, abs=1e-15)
    assert values["recall"] == pytest.approx(recall, abs=1e-15)
    assert values["f1"] == pytest.approx(f1, abs=1e-15)


def test_headline_micro_14_uncertain_positive(ce):
    check(ce["conventions"]["uncertain_positive"]["micro_14"], 4 / 6, 4 / 5, 8 / 11)
    assert ce["headline"] == "uncertain_positive/micro_14"


def test_micro_14_uncertain_negative(ce):
    check(ce["conventions"]["uncertain_negative"]["micro_14"], 2 / 5, 2 / 3, 1 / 2)


def test_micro_f1_satisfies_the_identity(ce):
    for policy in ce["conventions"].values():
        v = policy["micro_14"]
        assert v["f1"] == pytest.approx(2 * v["precision"] * v["recall"] / (v["precision"] + v["recall"]))


def test_macro_14_counts_empty_observations_as_zero(ce):
    # Cardiomegaly, Edema, Pneumonia and No Finding score 1; the other ten score 0.
    check(ce["conventions"]["uncertain_positive"]["macro_14"], 4 / 14, 4 / 14, 4 / 14)


def test_five_observation_conventions(ce):
    # Atelectasis FN, Cardiomegaly TP, Consolidation empty, Edema TP, Pleural Effusion FP.
    check(ce["conventions"]["uncertain_positive"]["micro_5"], 2 / 3, 2 / 3, 2 / 3)
    check(ce["conventions"]["uncertain_positive"]["macro_5"], 2 / 5, 2 / 5, 2 / 5)


def test_example_based_promptmrg(ce):
    # per report (TP, FP, FN): (2, 1, 0), (1, 1, 0), (1, 0, 1); F1 = TP / (TP + (FP + FN) / 2)
    check(ce["conventions"]["uncertain_positive"]["example_based"],
          (2 / 3 + 1 / 2 + 1) / 3, (1 + 1 + 1 / 2) / 3, (2 / 2.5 + 1 / 1.5 + 1 / 1.5) / 3)
    # uncertain negative: (1, 2, 0), (1, 1, 0), (0, 0, 1)
    check(ce["conventions"]["uncertain_negative"]["example_based"],
          (1 / 3 + 1 / 2 + 0) / 3, (1 + 1 + 0) / 3, (1 / 2 + 1 / 1.5 + 0) / 3)


def test_per_observation_scores_and_support(ce):
    per = ce["per_observation"]["uncertain_positive"]
    assert per["Cardiomegaly"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per["Atelectasis"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per["Pleural Effusion"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert sum(v["support"] for v in per.values()) == 5
    assert ce["per_observation"]["uncertain_negative"]["Edema"]["support"] == 0


def test_label_counts(ce):
    assert ce["label_counts"]["reference"]["Edema"] == {"positive": 0, "negative": 0, "uncertain": 1, "blank": 2}
    assert ce["label_counts"]["prediction"]["Pleural Effusion"] == {"positive": 1, "negative": 0, "uncertain": 0,
                                                                    "blank": 2}


def test_label_matrix_uses_chexbert_order_and_nan_for_blank():
    matrix = label_matrix([labels(Enlarged_Cardiomediastinum=0, No_Finding=1)])
    assert matrix[0, 0] == 0 and matrix[0, 13] == 1
    assert np.isnan(matrix[0, 1:13]).all()
