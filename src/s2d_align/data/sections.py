"""Splitting a MIMIC-CXR free-text report into named sections, as the official MIT-LCP parser does.

Published MIMIC-CXR numbers use the FINDINGS extracted by MIT-LCP's
``txt/section_parser.py`` and ``create_section_files.py`` (mimic-code
repository). To make our targets the same text, this module reproduces their
behaviour (the code is ours):

1. **Header detection.** A header is a newline, one space, a run of capitals,
   spaces and ``()/,-``, a colon and one whitespace character
   (``"\\n FINDINGS:  "``). MIMIC reports indent every line by one space, so
   capitals at the start of a line that end in a colon are headers and the
   same words inside a sentence are not. Text before the first header is the
   ``preamble``; a report without any header is one ``full report`` section.
   After a header the search for the next one resumes at the next line break,
   so a header is never found on the line that opened the previous section.
2. **Name normalisation.** Names are lower-cased and mapped through a table
   of frequent names and typos (``impresson`` -> impression, ``findngs`` ->
   findings, ``conclusion`` -> impression, ``findings and impression`` ->
   impression ...); failing that, a name containing one of the main section
   names becomes that name; failing that, a name describing the study's views
   (``PA AND LATERAL VIEWS OF THE CHEST``) becomes ``findings``.
3. **Empty sections.** Empty ``findings`` and ``impression`` sections are
   dropped (a report often has an empty header before the real one).
4. **No findings nor impression.** The paragraph after the last blank line of
   the last section becomes ``last_paragraph``.
5. **Last occurrence wins.** Where a name occurs more than once (an addendum
   repeating IMPRESSION), the last one is the section's text.

The official script also carries per-study manual overrides
(``custom_mimic_cxr_rules``); they only feed its single "conclusion" column,
not the ``findings``/``impression`` columns of ``mimic_cxr_sectioned.csv``,
so they have no counterpart here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")

# Canonical name <- spellings seen in MIMIC-CXR reports (typos included). The
# official table also maps the truncated "ndication" to *impression*; kept, as
# it changes which text is extracted.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "preamble": ("preamble",),
    "impression": (
        "impression", "conclusion", "findings and impression", "findings/impression", "findings/ impression",
        "impresson", "imprression", "imoression", "impressoin", "imprssion", "impresion", "imperssion",
        "mpression", "impession", "ndication",
    ),
    "findings": (
        "findings", "finding", "findins", "findindgs", "findgings", "findngs", "findnings", "finidngs",
        "chest, two views", "reference findings",
    ),
    "comparison": (
        "comparison", "comparisons", "reference exam", "comparison exam", "comparison film", "comparision",
        "comparsion", "comparrison", "comparisions",
    ),
    "indication": ("indication", "reason for examination", "reason for exam", "clinical indication", "idication"),
    "examination": ("examination", "exam", "type of examination"),
    "technique": ("technique",),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "notification": ("notification",),
    "recommendations": ("recommendations", "recommendation(s)", "recommendation"),
    "addendum": ("addendum",),
    "date": ("date",),
    "comment": ("comment",),
    "wet read": ("wet read", "wetread"),
}
_CANONICAL = {spelling: name for name, spellings in _SPELLINGS.items() for spelling in spellings}

# Checked in this order: "findings and impression" style names that escaped the table go to impression.
_MAIN = ("impression", "findings", "history", "comparison", "addendum")

# A header that names the views of the study stands in for FINDINGS.
_VIEW_WORDS = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright"
    "|ribs|pa and lat"
)


@dataclass(frozen=True)
class Section:
    name: str  # normalised
    text: str  # raw, as in the report (not stripped)
    start: int  # offset of ``text`` in the report


def normalise_section_name(name: str) -> str:
    """The canonical name of a header (see the module docstring, step 2)."""
    name = name.lower().strip()
    if name in _CANONICAL:
        return _CANONICAL[name]
    for main in _MAIN:
        if main in name:
            return main
    if _VIEW_WORDS.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[Section]:
    """All sections of a report, in order, with normalised names (steps 1 to 4)."""
    match = _HEADER.search(text)
    if match is None:
        sections = [Section("full report", text, 0)]
    else:
        sections = [Section("preamble", text[: match.start(1)], 0)]
        while match is not None:
            name = match.group(1)
            start = match.end()
            line_break = text.find("\n", start)
            resume = line_break if line_break != -1 else start
            match = _HEADER.search(text, resume)
            end = match.start() if match is not None else len(text)
            sections.append(Section(normalise_section_name(name), text[start:end], start))
    sections = [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]
    names = {s.name for s in sections}
    if "findings" not in names and "impression" not in names and sections and "\n \n" in sections[-1].text:
        last = sections[-1]
        head, _, rest = last.text.partition("\n \n")
        sections[-1] = Section(last.name, head, last.start)
        sections.append(Section("last_paragraph", rest, last.start + len(head)))
    return sections


def last_section(sections: list[Section], name: str) -> str | None:
    """The stripped text of the last section called ``name`` (step 5), or None."""
    for section in reversed(sections):
        if section.name == name:
            return section.text.strip()
    return None


def findings_and_impression(text: str) -> tuple[str | None, str | None]:
    """FINDINGS and IMPRESSION of a MIMIC-CXR report, whitespace collapsed; None where absent."""
    sections = split_sections(text)
    findings = last_section(sections, "findings")
    impression = last_section(sections, "impression")
    return (_collapse(findings), _collapse(impression))


def _collapse(text: str | None) -> str | None:
    if text is None:
        return None
    return " ".join(text.split()) or None
