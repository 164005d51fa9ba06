"""Cleaning: R2Gen's and R2GenGPT's behaviours, quirks included, pinned on tricky strings.

Expected outputs were produced by the original R2Gen / R2GenGPT lambdas and
are written here literally.
"""

import pytest

from s2d_align.evaluation.cleaning import CLEANERS, clean_iu_xray, clean_mimic_cxr, clean_mimic_cxr_colon, cleaner

# text: (iu_xray, mimic_cxr, mimic_cxr_colon)
PINNED = {
    "1. Heart size normal. 2. No effusion.": ("heart size normal . no effusion .",) * 3,
    # "2.5" is no sentence end, then loses its point
    "Nodule measures 2.5 cm.": ("nodule measures 25 cm .",) * 3,
    # R2Gen's class has the range ':-[' which swallows '<'; R2GenGPT keeps it
    "Nodule <5 mm.": ("nodule 5 mm .", "nodule 5 mm .", "nodule <5 mm ."),
    "Effusion and/or atelectasis.": ("effusion andor atelectasis .",) * 3,
    "IMPRESSION: No acute disease.": ("impression no acute disease .", "impression no acute disease .",
                                      "impression : no acute disease ."),
    # "1. " is removed wherever it occurs, even inside "T11. "
    "T11. compression": ("t1compression .",) * 3,
    # only the MIMIC cleaner collapses double spaces
    "  Double  spaces..  here ": ("double  spaces . here .", "double spaces . here .", "double spaces . here ."),
    # empty sentences survive R2Gen's always-true filter
    "a. . b": ("a .  . b .",) * 3,
    "": (" .",) * 3,
    # the IU X-Ray cleaner keeps line breaks
    "Line\nbreak. Next": ("line\nbreak . next .", "line break . next .", "line break . next ."),
    # a leading "3. " is not list numbering to R2Gen (only " 3. " is)
    "3. Clips. 4. Wires 5. done": ("3 . clips . wires . done .",) * 3,
    "Heart: normal; lungs: clear!": ("heart normal lungs clear .", "heart normal lungs clear .",
                                     "heart : normal lungs : clear ."),
    "O'Brien \"quoted\" [x] {y} 10% 5+6 a@b": ("obrien quoted x y 10 56 ab .", "obrien quoted x y 10 56 ab .",
                                              "obrien quoted x y 10 56 a@b ."),
}


@pytest.mark.parametrize("text", PINNED)
def test_pinned_outputs(text):
    assert (clean_iu_xray(text), clean_mimic_cxr(text), clean_mimic_cxr_colon(text)) == PINNED[text]


def test_none_scores_the_text_as_given():
    assert cleaner("none")("  Heart:  NORMAL.\n") == "  Heart:  NORMAL.\n"


def test_names_and_errors():
    assert set(CLEANERS) == {"none", "iu_xray", "mimic_cxr", "mimic_cxr_colon"}
    with pytest.raises(ValueError, match="unknown cleaning 'r2gen'"):
        cleaner("r2gen")
