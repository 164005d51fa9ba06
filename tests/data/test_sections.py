import pytest

from s2d_align.data.sections import findings_and_impression, normalise_section_name, split_sections

FINAL = "                                 FINAL REPORT\n"


@pytest.mark.parametrize(
    "header, name",
    [
        ("FINDINGS", "findings"),
        ("FINDNGS", "findings"),
        ("IMPRESSON", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("COMPARISONS", "comparison"),
        ("WET READ", "wet read"),
        ("NDICATION", "impression"),  # the official table's mapping, kept
        ("PRELIMINARY FINDINGS", "findings"),  # contains a main section name
        ("IMPRESSION AND RECOMMENDATIONS", "impression"),  # impression is checked before findings
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),  # names the views
        ("PORTABLE UPRIGHT", "findings"),
        ("NOTE", "note"),
    ],
)
def test_header_names(header, name):
    assert normalise_section_name(header) == name


def test_sections_of_a_typical_report():
    text = (
        FINAL + " EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  cough\n \n FINDINGS: \n \n"
        " Lungs clear.\n \n IMPRESSION: \n \n Normal.\n"
    )
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "examination", "indication", "findings", "impression"]
    assert [s.text for s in sections] == [
        FINAL + " ", " CHEST (PA AND LAT)\n ", " cough\n ", "\n \n Lungs clear.\n ", "\n \n Normal.\n",
    ]
    assert findings_and_impression(text) == ("Lungs clear.", "Normal.")


def test_no_header_is_one_full_report_section():
    text = "Lungs are clear.\n \n No effusion."
    assert [(s.name, s.text) for s in split_sections(text)] == [
        ("full report", "Lungs are clear."), ("last_paragraph", " No effusion."),
    ]
    assert findings_and_impression(text) == (None, None)


def test_header_requires_line_start_capitals_and_colon_space():
    # "FINDINGS:" inside a line is not a header; lower-case headers are not headers
    text = FINAL + " INDICATION:  see FINDINGS: below\n findings: none\n \n IMPRESSION:  ok\n"
    assert [s.name for s in split_sections(text)] == ["preamble", "indication", "impression"]


def test_next_header_is_searched_from_the_next_line():
    # a header right after another header's text on the same line is not split off
    text = FINAL + " FINDINGS:  A. \n IMPRESSION:  B.\n"
    assert findings_and_impression(text) == ("A.", "B.")
    # The header's trailing whitespace may be the line break itself; the next line then lacks its
    # leading "\n" and is read as text, exactly as the official parser does.
    text = FINAL + " FINDINGS:\n IMPRESSION:  B.\n"
    assert findings_and_impression(text) == ("IMPRESSION: B.", None)


def test_last_occurrence_wins_and_empty_sections_are_dropped():
    text = (
        FINAL + " FINDINGS:  First findings.\n \n IMPRESSION:  First impression.\n \n"
        " ADDENDUM:  Called the team.\n \n FINDINGS:  \n \n IMPRESSION:  Revised impression.\n"
    )
    assert findings_and_impression(text) == ("First findings.", "Revised impression.")


def test_last_paragraph_only_without_findings_or_impression():
    text = FINAL + " INDICATION:  cough\n \n COMPARISON:  none\n \n The lungs are clear.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "indication", "comparison", "last_paragraph"]
    assert sections[-1].text == " The lungs are clear.\n"
    assert sections[-2].text == " none"
