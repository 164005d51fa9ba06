"""The rule labeler: CheXpert's mention, negation, uncertainty and aggregation rules on report sentences."""

import pytest

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.evaluation.labelers.rules import RuleLabeler


@pytest.fixture(scope="module")
def labeler():
    return RuleLabeler()


def expect(**values):
    out = dict.fromkeys(OBSERVATIONS)
    out.update({name.replace("_", " "): v for name, v in values.items()})
    return out


CASES = {
    # negation before the mention, through a coordinated list
    "There is no pleural effusion, pneumothorax, or focal consolidation.":
        expect(Pleural_Effusion=0, Pneumothorax=0, Consolidation=0, No_Finding=1),
    # "normal" after the mention, with and without a verb; "contour" mentions the mediastinum (CheXpert)
    "Heart size and mediastinal contours are within normal limits.":
        expect(Cardiomegaly=0, Enlarged_Cardiomediastinum=0, No_Finding=1),
    "Heart and mediastinum normal. Lungs clear.": expect(Cardiomegaly=0, Enlarged_Cardiomediastinum=0, No_Finding=1),
    "The heart is not significantly enlarged.": expect(Cardiomegaly=0, No_Finding=1),
    # a modifier reaches through a list but not past a finding's own descriptor
    "Normal heart size, mediastinal and hilar contours.": expect(Cardiomegaly=0, Enlarged_Cardiomediastinum=0,
                                                                 No_Finding=1),
    "Normal heart size, small left pleural effusion.": expect(Cardiomegaly=0, Pleural_Effusion=1),
    # a verb closes a negation's scope; a participle right after "no" does not
    "No pneumothorax is seen and the heart is enlarged.": expect(Pneumothorax=0, Cardiomegaly=1),
    "No visualized pneumothorax.": expect(Pneumothorax=0, No_Finding=1),
    # uncertainty: hedges before, "X or Y", "cannot be excluded" after
    "Patchy basilar opacity may reflect atelectasis or pneumonia.":
        expect(Lung_Opacity=1, Atelectasis=-1, Pneumonia=-1),
    "Pneumonia cannot be excluded.": expect(Pneumonia=-1),
    "Possible small right effusion.": expect(Pleural_Effusion=-1),
    # CheXpert's pre-negation uncertainty: "no new X", "cannot exclude X"
    "No new focal consolidation. Cannot exclude a small pneumothorax.": expect(Consolidation=-1, Pneumothorax=-1),
    # "no change in X" leaves X present
    "No change in the small left pleural effusion.": expect(Pleural_Effusion=1),
    # a stable cardiac structure is uncertain; stable cardiomegaly is cardiomegaly
    "Heart size is stable.": expect(Cardiomegaly=-1),
    "Stable mild cardiomegaly.": expect(Cardiomegaly=1),
    # conflicts: negative + positive -> positive, negative + uncertain -> uncertain
    "Left pleural effusion. No right pleural effusion.": expect(Pleural_Effusion=1),
    "Pulmonary vascular congestion without frank edema.": expect(Edema=-1),
    # heart failure adds an uncertain Cardiomegaly
    "Findings are consistent with CHF.": expect(Edema=1, Cardiomegaly=-1),
    # support devices, removal negates, a device lying over the heart is no cardiac mention
    "Interval removal of the endotracheal tube. Right PICC line tip in the SVC.": expect(Support_Devices=1,
                                                                                        No_Finding=1),
    "Pacemaker leads project over the heart.": expect(Support_Devices=1, No_Finding=1),
    # unmentions: pericardial effusion, calcified nodule, plate-like atelectasis, Kerley B lines, tuberculosis
    "Small pericardial effusion.": expect(No_Finding=1),
    "Calcified nodule in the right upper lobe.": expect(),
    "Plate-like atelectasis at the left base.": expect(Atelectasis=1),
    "Kerley B lines. History of tuberculosis.": expect(No_Finding=1),
    # other findings rule out No Finding
    "Emphysema. No acute cardiopulmonary process.": expect(),
    "Hyperexpanded but otherwise clear lungs.": expect(),
    # blank everywhere: No Finding
    "": expect(No_Finding=1),
}


@pytest.mark.parametrize("text", CASES)
def test_report_labels(labeler, text):
    assert labeler.label([text])[0] == CASES[text]


# Misses found by reading the Open-i reports whose labels disagreed with the MeSH indexing (the report
# each sentence comes from, sometimes shortened, in the comment). Every one was wrong before the fix.
OPENI_MISSES = {
    # 2771: edema outside the lungs is no Edema
    "Soft tissue edema with no visible bony injury.": expect(No_Finding=1),
    # 1202, 2123, 3286: engorged vessels, pulmonary venous hypertension = vascular congestion (uncertain Edema)
    "The heart is large, and the pulmonary vessels are engorged.": expect(Cardiomegaly=1, Edema=-1),
    "Cardiomegaly and pulmonary venous hypertension.": expect(Cardiomegaly=1, Edema=-1),
    # 1990, 3829, 956, 1197: vascular prominence in other words
    "Prominence of the central vasculature, unchanged.": expect(Edema=-1),
    "Stable mild cardiomegaly and increased lung vascularity.": expect(Cardiomegaly=1, Edema=-1),
    "Of the pulmonary vascularity is prominent.": expect(Edema=-1),
    "No increased pulmonary vascularity.": expect(Edema=0, No_Finding=1),
    # 3430, 2955: cephalization and redistribution are congestion, negated edema leaves it uncertain
    "Mild vascular cephalization, no definite interstitial changes of pulmonary edema.": expect(Edema=-1),
    "Vascular redistribution without typical findings of pulmonary edema.": expect(Edema=-1),
    # 974: congestion without an adjective
    "Mild congestion without edema.": expect(Edema=-1),
    # 3994: "early failure" is heart failure (Edema, and CheXpert's uncertain Cardiomegaly)
    "Signs of early failure.": expect(Edema=1, Cardiomegaly=-1),
    # 1097, 1110, 2978, ...: a healed granulomatous infection is no pneumonia
    "Diffuse bilateral calcified sequelae of prior granulomatous infection.": expect(),
    "Findings consistent with previous active pulmonary tuberculosis pneumonia.": expect(No_Finding=1),
    # 3399, 945, 2961: pneumonitis is pneumonia (MeSH lists it as an entry term)
    "Patchy left lower lobe infiltrate and focal atelectasis, consistent with pneumonitis.":
        expect(Lung_Opacity=1, Atelectasis=1, Pneumonia=1),
    # 3327: "without comparisons" negates nothing
    "Without comparisons, this may represent a focal area of infection or pneumonia.": expect(Pneumonia=-1),
    # 867: the differential's list is uncertain even past a verb
    "Differential diagnosis is xxxx and includes asymmetric pulmonary edema, atypical infection.":
        expect(Edema=-1, Pneumonia=-1),
    # 2909, 1614, 2688: "in the differential", "a consideration"
    "Pneumonia is in the differential.": expect(Pneumonia=-1),
    "A pneumonia superimposed on changes of emphysema would be a consideration.": expect(Pneumonia=-1),
    "Atypical infection is another consideration.": expect(Pneumonia=-1),
}


@pytest.mark.parametrize("text", OPENI_MISSES)
def test_openi_misses_fixed(labeler, text):
    assert labeler.label([text])[0] == OPENI_MISSES[text]


def test_chexpert_labeler_sample_reports(labeler):
    """The CheXpert labeler's own example (stanfordmlgroup/chexpert-labeler sample_reports.csv and
    labeled_reports.csv): all 56 labels of its four reports."""
    reports = [
        "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
        "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n"
        "2. Cardiomegaly without overt edema.",
        "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
        "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.",
    ]
    expected = [
        expect(No_Finding=1, Cardiomegaly=0, Edema=0, Pneumonia=0, Pleural_Effusion=0),
        expect(Cardiomegaly=1, Edema=0, Atelectasis=1, Pleural_Effusion=1),
        expect(Lung_Opacity=1, Consolidation=-1, Atelectasis=-1),
        expect(Cardiomegaly=1),
    ]
    got = labeler.label(reports)
    matches = sum(got[i][o] == expected[i][o] for i in range(4) for o in OBSERVATIONS)
    assert matches == 56


def test_all_fourteen_in_chexbert_order(labeler):
    (result,) = labeler.label(["Mild cardiomegaly."])
    assert list(result) == list(OBSERVATIONS)


def test_mentions_explain_the_labels(labeler):
    mentions = labeler.mentions("No effusion. Possible pneumonia.")
    assert [(m.observation, m.text, m.label) for m in mentions] == [
        ("Pleural Effusion", "effusion", 0),
        ("Pneumonia", "pneumonia", -1),
    ]


def test_cleaned_text_labels_like_raw_text(labeler):
    raw = "1. No pleural effusion. 2. Mild cardiomegaly and/or pericardial fat."
    cleaned = "no pleural effusion . mild cardiomegaly andor pericardial fat ."
    assert labeler.label([raw]) == labeler.label([cleaned])


def test_clause_cache_does_not_change_results(labeler):
    texts = ["No effusion. Mild cardiomegaly.", "Mild cardiomegaly. No effusion."] * 3
    first = labeler.label(texts)
    assert RuleLabeler(cache_size=1).label(texts) == first


def test_cli_label(tmp_path, capsys):
    import json

    from s2d_align.cli import main

    source = tmp_path / "reports.jsonl"
    source.write_text(json.dumps({"id": "r1", "text": "Possible small right effusion."}) + "\n"
                      + json.dumps({"id": 2, "text": ""}) + "\n")
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--input", str(source), "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [
        {"id": "r1", "labels": {**dict.fromkeys(OBSERVATIONS), "Pleural Effusion": -1}},
        {"id": "2", "labels": {**dict.fromkeys(OBSERVATIONS), "No Finding": 1}},
    ]
    assert "labeled 2 reports with rules 2" in capsys.readouterr().out


def test_run_on_text_stays_fast(labeler):
    """A generated report looping without full stops must not make labeling quadratic."""
    import time

    started = time.perf_counter()
    (labels,) = labeler.label(["small left pleural effusion and " * 2000])
    assert labels["Pleural Effusion"] == 1
    assert time.perf_counter() - started < 5
