import pytest

from s2d_align.data.findings_rules import extract_positive_findings


@pytest.mark.parametrize(
    "findings, phrases",
    [
        ("The heart is normal in size. The lungs are clear.", []),
        ("No pneumothorax, pleural effusion, or focal consolidation.", []),
        ("Calcified granuloma in the right upper lobe. No effusion.", ["calcified granuloma in right upper lobe"]),
        ("Mild cardiomegaly. Low lung volumes without focal consolidation.", ["mild cardiomegaly", "low lung volumes"]),
        ("The heart is mildly enlarged. The heart is not enlarged.", ["mild cardiomegaly"]),
        ("There is a small left pleural effusion.", ["small left pleural effusion"]),
        ("Left basilar opacity may represent atelectasis or pneumonia.", ["left basilar opacity"]),
        ("Possible small nodule in the left upper lobe.", []),
        ("Degenerative changes of the thoracic spine. Changes are stable.", ["degenerative changes in thoracic spine"]),
        ("The lungs are hyperexpanded. The thoracic aorta is mildly tortuous.", ["hyperinflated lungs", "mildly tortuous aorta"]),
        ("No focal consolidation, but there is a large hiatal hernia.", ["large hiatal hernia"]),
        # negation after the finding, in its clause
        ("Pleural effusion is not seen.", []),
        ("Pneumothorax is not present.", []),
        ("The previously seen left pleural effusion has resolved.", []),
        ("Focal consolidation is absent.", []),
        ("Pneumothorax is no longer seen. Pneumonia has been ruled out.", []),
        ("Small left pleural effusion is present.", ["small left pleural effusion"]),
        ("Small left pleural effusion is present; pneumothorax is not seen.", ["small left pleural effusion"]),
        ("Pneumothorax is not seen, but a small right pleural effusion is present.", ["small right pleural effusion"]),
    ],
)
def test_positive_findings_with_location(findings, phrases):
    assert extract_positive_findings(findings) == phrases
