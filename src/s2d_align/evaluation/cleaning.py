"""Report cleaning before scoring, as the published baselines do it.

Most numbers in the radiology report generation literature are computed on
*cleaned* text, and the cleaning changes BLEU by points. R2Gen (Chen et al.,
EMNLP 2020, ``modules/tokenizers.py``) defines two cleaners that later work
copied: ``clean_report_iu_xray`` and ``clean_report_mimic_cxr``. R2GenGPT
(Wang et al., 2023) and LLM-RG4 (2024) changed the MIMIC-CXR one to keep ``:``
as a token. This module reproduces all three behaviours character for
character, quirks included, because matching published numbers is the point:

- list numbering is removed by plain substring replacement (``"1. "`` goes
  anywhere it occurs, so ``"T11. "`` loses its ``"1. "`` too);
- ``report.split(". ")`` makes the sentences, so a decimal such as ``2.5``
  stays inside its sentence and then loses its point (``25``);
- the punctuation class R2Gen wrote, ``[.,?;*!%^&_+():-\\[\\]{}]``, contains
  the accidental range ``:-\\[`` -- every character from ``:`` to ``[``
  (``:;<=>?@`` and ``A-Z``) -- so ``<5 mm`` becomes ``5 mm`` and ``:`` is
  dropped; ``/`` is deleted, so ``and/or`` becomes ``andor``;
- empty sentences are kept (R2Gen's filter compares a string with ``[]``,
  which is always true), so ``". ."`` can survive;
- the IU X-Ray cleaner never replaces line breaks; they reach the scorer,
  which splits on all whitespace.

``none`` scores the text exactly as given. References are never truncated
here or anywhere else (R2Gen truncated them to the decoder length, a flaw).
"""

from __future__ import annotations

import re
from typing import Callable

_NUMBERING = (
    ("1. ", ""),
    (". 2. ", ". "),
    (". 3. ", ". "),
    (". 4. ", ". "),
    (". 5. ", ". "),
    (" 2. ", ". "),
    (" 3. ", ". "),
    (" 4. ", ". "),
    (" 5. ", ". "),
)
# Each pair is one ``str.replace`` pass, in R2Gen's order; repeated pairs are repeated passes.
_IU_XRAY_PASSES = (("..", "."),) * 3 + _NUMBERING
_MIMIC_CXR_PASSES = (("\n", " "),) + (("__", "_"),) * 7 + (("  ", " "),) * 6 + (("..", "."),) * 8 + _NUMBERING
_MIMIC_CXR_COLON_PASSES = _MIMIC_CXR_PASSES + ((":", " :"),)

# R2Gen's class spelled out: its accidental range ':-[' is ':;<=>?@', 'A-Z' and '['.
_R2GEN_PUNCTUATION = re.compile(r"[.,?;*!%^&_+():;<=>?@A-Z\[\]{}]")
# R2GenGPT dropped the range, so ':' (and '-', '<', '=', '>', '@') survive.
_R2GENGPT_PUNCTUATION = re.compile(r"[.,?;*!%^&_+()\[\]{}]")


def _r2gen_style(report: str, passes: tuple[tuple[str, str], ...], punctuation: re.Pattern[str]) -> str:
    for old, new in passes:
        report = report.replace(old, new)
    sentences = report.strip().lower().split(". ")
    cleaned = []
    for sentence in sentences:
        for char in ('"', "/", "\\", "'"):
            sentence = sentence.replace(char, "")
        cleaned.append(punctuation.sub("", sentence.strip().lower()))
    return " . ".join(cleaned) + " ."


def clean_iu_xray(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``."""
    return _r2gen_style(report, _IU_XRAY_PASSES, _R2GEN_PUNCTUATION)


def clean_mimic_cxr(report: str) -> str:
    """R2Gen's ``clean_report_mimic_cxr``."""
    return _r2gen_style(report, _MIMIC_CXR_PASSES, _R2GEN_PUNCTUATION)


def clean_mimic_cxr_colon(report: str) -> str:
    """R2GenGPT's MIMIC-CXR cleaner (used by LLM-RG4): R2Gen's, but ``:`` is kept as its own token."""
    return _r2gen_style(report, _MIMIC_CXR_COLON_PASSES, _R2GENGPT_PUNCTUATION)


def _as_given(report: str) -> str:
    return report


CLEANERS: dict[str, Callable[[str], str]] = {
    "none": _as_given,
    "iu_xray": clean_iu_xray,
    "mimic_cxr": clean_mimic_cxr,
    "mimic_cxr_colon": clean_mimic_cxr_colon,
}

DESCRIPTIONS = {
    "none": "text scored exactly as given (whitespace tokenisation only)",
    "iu_xray": "R2Gen clean_report_iu_xray (lower-case, list numbering and punctuation removed, sentences joined by ' . ')",
    "mimic_cxr": "R2Gen clean_report_mimic_cxr (as iu_xray, plus line breaks, repeated '_' and spaces collapsed)",
    "mimic_cxr_colon": "R2GenGPT / LLM-RG4 MIMIC-CXR cleaner (as mimic_cxr, but ':' kept as a separate token)",
}


def cleaner(scheme: str) -> Callable[[str], str]:
    """The cleaning function called ``scheme``; a ValueError lists the valid names."""
    try:
        return CLEANERS[scheme]
    except KeyError:
        raise ValueError(f"unknown cleaning {scheme!r}; choose one of {', '.join(CLEANERS)}") from None
