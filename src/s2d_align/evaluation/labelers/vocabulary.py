"""The rule labeler's vocabulary: what counts as a mention of each observation, and the cue phrases.

The conventions follow the CheXpert labeler (Irvin et al., AAAI 2019;
stanfordmlgroup/chexpert-labeler) so that our labels mean what CheXpert and
CheXbert labels mean:

- which words mention which observation (``"the heart"`` and ``"heart size"``
  mention Cardiomegaly, ``"contour"`` mentions Enlarged Cardiomediastinum,
  ``"fibrosis"`` is Pleural Other, ``"scar"`` is Lung Opacity, ``"chf"`` is
  Edema, ``"plate"`` is a support device);
- "unmentions" that look like a mention but are not (``pericardial effusion``,
  ``calcified nodule``, ``massive``, a device lying *over the heart*);
- a list of other findings (emphysema, granuloma, degenerative change, ...)
  that are no CheXpert observation but rule out No Finding;
- negation (``no``, ``without``, ``normal``, ``resolved``, ``removal of``,
  ``rule out``), uncertainty (``possible``, ``may``, ``cannot exclude``,
  ``X or Y``, ``no new X``, vascular congestion, a *stable* heart size).

We wrote the phrases as anchored regular expressions rather than CheXpert's
bare substrings, which is where we deliberately differ: ``tube`` no longer
matches *tuberculosis*, ``plate`` no longer matches *plate-like atelectasis*,
``lines`` no longer matches *Kerley B lines* or *pleural line*. CheXpert
decides negation on a dependency parse; we approximate its patterns on the
clause with the cue-and-scope rules of NegEx (Chapman et al., 2001), which
needs no parser and runs thousands of reports a second.

All patterns see normalised text: lower case, ``and/or`` and ``a/b`` turned
into ``or``, whitespace collapsed (see :mod:`.rules`).
"""

from __future__ import annotations

OTHER_FINDING = "Other finding"
"""Category of the findings that are no CheXpert observation but make No Finding blank."""

# Pulmonary venous congestion described without the word: engorged or prominent vessels, increased
# vascularity, cephalization, vascular redistribution, pulmonary venous hypertension. CheXpert's
# "vascular prominence" and "vascular congestion", which it always labels uncertain Edema.
_VASCULAR_SIGN = (
    r"(?:(?:prominen\w*|increased|engorged)(?: of)?(?: the)?"
    r"(?: (?:central|lung|pulmonary|hilar|perihilar|bilateral|interstitial|upper lobe|vascular))*"
    r" vascula(?:r markings|rity|ture)|"
    r"(?:lung |pulmonary )?vascula(?:rity|ture) (?:is|are|appears?|remains?) (?:(?!not\b)\w+ )?"
    r"(?:prominent|increased|engorged|congested)|"
    r"engorge\w*|(?:vascular )?cephalization|vascular redistribution|pulmonary venous hypertension)"
)

# ----------------------------------------------------------------------------- mentions

MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"cardiomediastinum",
        r"mediastinum",
        r"contours?",
        r"(?:cardio)?mediastinal (?:silhouette|configuration|contours?|width|widening|enlargement|shadow)",
        r"pericardial silhouette",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"cardiac enlargement",
        r"enlarge(?:d|ment of the) heart",
        r"cardiac (?:size|shadow|contours?|silhouette)",
        r"heart size",
        # "the heart", "heart is ..." -- but not heart failure, the heart border, a heart valve
        r"heart(?! (?:failure|border|borders|valve|valves|disease|rate))",
    ),
    "Lung Opacity": (
        r"opaci\w*",
        r"decreased translucency",
        r"increased density",
        r"air[- ]?space (?:disease|process)",
        r"infiltrat\w*",
        r"interstitial (?:markings?|pattern|lung)",
        r"reticular (?:pattern|markings?)",
        r"reticulation",
        r"parenchymal scarring",
        r"(?:peribronchial|wall) thickening",
        r"ground[- ]glass",
        r"scar\w*",
    ),
    "Lung Lesion": (
        r"mass(?:es)?",
        r"nodul\w*",
        r"nodular (?:density|densities|opacity|opacities|opacification)",
        r"lump",
        r"cavitary lesions?",
        r"(?:lung|pulmonary|parenchymal|spiculated) lesions?",
        r"carcinoma",
        r"neoplasms?",
        r"tumou?rs?",
    ),
    "Edema": (
        r"edema\w*",
        r"(?:congestive )?heart failure",
        r"(?:cardiac|early|left (?:heart|ventricular)) failure",
        r"chf",
        r"(?:(?:vascular|pulmonary|venous) )?congest(?:ion|ed)",
        r"indistinct\w*",
        r"vascular prominence",
        # the same sign in other words: MeSH indexes these as Pulmonary Congestion
        _VASCULAR_SIGN,
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (
        r"(?:broncho)?pneumonias?",
        r"pneumonitis",
        r"infections?",
        r"infectious(?: process)?",
    ),
    "Atelectasis": (
        r"atelecta\w*",
        r"collapsed?",
    ),
    "Pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)",),
    "Pleural Effusion": (
        r"effusions?",
        r"pleural fluid",
    ),
    "Pleural Other": (
        r"pleural thickening",
        r"fibros\w*",
        r"fibrothorax",
        r"pleural (?:\w+ )?scar\w*",
        r"pleuro-?(?:parenchymal|pericardial) scar\w*",
        r"pleural[- ]parenchymal scar\w*",
        r"pleural plaques?",
    ),
    "Fracture": (
        r"fractur\w*",
        r"fx",
    ),
    "Support Devices": (
        r"pacer",
        r"pacemakers?",
        r"pacing",
        r"lines?",
        r"picc",
        r"tub(?:e|es|ing)",
        r"valves?",
        r"catheters?",
        r"hardware",
        r"arthroplast\w*",
        r"prosthes[ie]s",
        r"markers?",
        r"icd",
        r"defib\w*",
        r"devices?",
        r"drains?",
        r"plates?",
        r"screws?",
        r"cannula\w*",
        r"apparatus",
        r"coils?",
        r"support",
        r"equipment",
        r"mediport",
        r"port-?a-?cath",
        r"stents?",
        r"generators?",
        r"aicd",
        r"leads(?! to\b)",
        r"(?:vp|ventriculoperitoneal) shunt",
    ),
    OTHER_FINDING: (
        r"emphysema\w*",
        r"blunt\w*",
        r"densit(?:y|ies)",
        r"elevat\w*",
        r"eventration",
        r"(?:dextro|levo)?scolio\w*",
        r"(?:dextro|levo)[- ]?curvature",
        r"degenera\w*",
        r"calcifi\w*",
        r"hyperinflat\w*",
        r"hyperexpan\w*",
        r"bronchospasm",
        r"asthma",
        r"hernia\w*",
        r"copd",
        r"plaques?",
        r"osteophyt\w*",
        r"spondylo\w*",
        r"aortic disease",
        r"bronchiolitis",
        r"airways? disease",
        r"thickening",
        r"aspiration",
        r"bullae?",
        r"bullous",
        r"contusions?",
        r"atheroscl\w*",
        r"osteopeni\w*",
        r"metasta\w*",
        r"granulom\w*",
        r"pneumomediastinum",
        r"pneumoperitoneum",
        r"osteodystrophy",
        r"cuffing",
        r"irregular lucency",
        r"inflam\w*",
        r"fissures?",
        r"hypertension",
        r"prominen\w*",
        r"kyphos\w*",
        r"kyphotic",
        r"bullets?",
        r"reticula\w*",
        r"thoracentesis",
        r"bronchitis",
        r"bronchiectasis",
        r"volume loss",
        r"deformit\w*",
        r"hemorrhage",
        r"hematoma",
        r"radiopaque",
        r"aerophagia",
        r"arthropath\w*",
        r"arthritis",
        r"tracheostomy",
        r"tortu\w*",
    ),
}

# A match that overlaps one of these is not a mention of the observation.
_POSITION = (
    r"(?:over(?:ly|lying|lies)?|in|into|within|through|behind|beneath|below|above|adjacent to|posterior to|"
    r"anterior to|projecting over|projects over|project over) the"
    r"(?: superior| inferior| left| right| anterior| posterior| upper| lower| expected)?"
)
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        _POSITION + r" (?:cardio)?mediastin\w*",
        _POSITION + r" (?:cardiac |mediastinal |hilar )?contours?",
    ),
    "Cardiomegaly": (_POSITION + r" (?:heart|cardiac (?:silhouette|shadow|contour))",),
    "Lung Opacity": (r"pleural (?:\w+ )?scar\w*", r"pleuro-?(?:parenchymal|pericardial) scar\w*"),
    "Lung Lesion": (r"calcified nodul\w*", r"nodular calcifi\w*", r"mass effect"),
    "Atelectasis": (
        r"(?:vertebral|vertebra|compression)(?: body)? collapse\w*",
        r"collapse\w* of (?:the )?(?:[tl]\d+|vertebra\w*)",
    ),
    "Pleural Effusion": (r"pericardial effusions?", r"joint effusions?"),
    # edema outside the lungs ("soft tissue edema" of an ankle film read with the chest)
    "Edema": (r"(?:soft[- ]tissue|subcutaneous|ankle|leg|extremity|facial|scalp|bowel wall) edema\w*",),
    # healed infection is a granuloma, not pneumonia ("sequelae of prior granulomatous infection")
    "Pneumonia": (
        r"(?:(?:prior|previous|old|remote|healed|sequelae? of)"
        r"(?: (?:active|pulmonary|chest|fungal|granulomatous|tuberculous|tuberculosis|histoplasmosis))* "
        r"(?:pneumonias?|pneumonitis|infections?))",
        r"(?:granulomatous|tuberculous|tuberculosis|histoplasm\w*|fungal granulomatous) infections?",
    ),
    "Support Devices": (
        r"kerley(?: b)? lines?",
        r"septal lines?",
        r"(?:visceral )?pleural lines?",
        r"skin ?fold lines?",
        r"plate[- ]?like",
        r"(?:aortic|mitral|tricuspid|pulmonic) valve (?:calcifi\w*|annul\w*|stenosis|disease|regurgitation)",
        r"calcifi\w* (?:of the )?(?:aortic |mitral )?valves?",
        r"(?:eustachian|fallopian) tubes?",
        r"b-? ?lines?",
        r"lung lines",
        r"breast (?:prosthes[ie]s|implants?)",
        r"support(?:s|ed|ive)? (?:the )?(?:diagnosis|finding)",
    ),
}

# Edema mentions that CheXpert always labels uncertain (they suggest, not show, edema).
ALWAYS_UNCERTAIN = {
    "Edema": r"(?:(?:vascular|pulmonary|venous) )?congest(?:ion|ed)|indistinct\w*|vascular prominence|" + _VASCULAR_SIGN,
}

# Heart failure mentioned positive or uncertain adds an uncertain Cardiomegaly (CheXpert's rule).
HEART_FAILURE = r"(?:congestive )?heart failure|(?:cardiac|early|left (?:heart|ventricular)) failure|chf"

# Cardiac and mediastinal mentions that name a structure rather than a finding: CheXpert calls
# "stable heart size" or "unchanged cardiomediastinal silhouette" uncertain.
STRUCTURE = r"the heart|heart|heart size|cardiac (?:size|shadow|contours?|silhouette)|contours?|" \
            r"(?:cardio)?mediastin\w*(?: (?:silhouette|configuration|contours?|width|shadow))?|pericardial silhouette"
STABILITY = r"\b(?:stable|unchanged|not changed|no (?:\w+ )?(?:change|increase)|similar|again (?:seen|noted))\b"
SIZE_WORDS = r"\b(?:enlarg\w*|cardiomegaly|large|widen\w*|prominen\w*|increas\w*|decreas\w*|small)\b"

# ----------------------------------------------------------------------------- cues

# Checked first: these make a mention uncertain even though they contain a negation word.
PRE_NEGATION_UNCERTAIN_BEFORE = (
    r"\b(?:cannot|can ?not|can't|could not|unable to) (?:be )?(?:entirely |completely |totally |definitely )?"
    r"(?:exclude|excluded|rule out|ruled out|be ruled out|be excluded)\b",
    r"\bnot (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded|ruled out)\b",
    r"\bno new\b",
    r"\bno evidence to rule out\b",
)
# Negation before the mention, scoped to the rest of the clause up to a verb that closes it.
# "no" is not a negation in "no change in", "no increase in", ...: the finding persists.
NEGATION_BEFORE = (
    r"\bno\b(?! (?:\w+ )?(?:change|changes|changed|increase|increased|decrease|decreased|progression|"
    r"improvement|worsening)\b)",
    r"\bnot\b(?! (?:well|clearly|entirely|completely|only|changed|significantly|excluded|ruled)\b)",
    r"\bwithout\b(?! (?:\w+ )?(?:change|changes|increase|progression|comparisons?|priors?)\b)",
    r"\bneither\b",
    r"\bnor\b",
    r"\bnegative for\b",
    r"\bfree of\b",
    r"\babsen(?:ce|t)\b",
    r"\bresolved\b",
    r"\bresolution of\b",
    r"\b(?:removal|removed|withdrawal|drainage|disappearance|clearing|clearance) of\b",
    r"\bremoved\b",
    r"\bclear(?:ed)? of\b",
    r"\brul(?:e|es|ed|ing) out\b",
    r"\bexclud(?:e|ed|es|ing)\b",
)

# "normal heart size", "unremarkable mediastinum": a modifier, so only a few words of scope.
# The scope runs through a list ("normal heart size, mediastinal and hilar contours") but stops at a
# word that describes a finding ("normal heart size, small left effusion").
NEGATING_MODIFIER_BEFORE = (
    r"\b(?:normal|unremarkable)(?:[- ]sized?| in size)?\b"
    r"(?= (?:(?!(?:small|large|mild|mildly|moderate|moderately|severe|minimal|trace|tiny|new|increas\w*|"
    r"enlarg\w*|widen\w*|prominent|bilateral|left|right|patchy|focal)\b)\S+ ){0,5}$)"
)

# What ends the scope of a cue placed before the mention: a verb ("no pneumothorax is seen, the heart
# is enlarged" does not negate the heart), or "and the" / "and there" starting a new statement.
SCOPE_CLOSER = (
    r"\b(?:is|are|was|were|has|have|had|identified|seen|noted|present|demonstrated|visualized|evident|"
    r"appreciated|detected|observed|remains?|appears?|and the|and there)\b"
)

# After the mention, cues are judged at the mention's own predicate (its first verb), or right
# after the mention when the sentence has no verb ("heart size normal").
PREDICATE_VERB = (
    r"\b(?:is|are|was|were|has|have|appears?|remains?|seems?|looks?|may|might|could|can|cannot|"
    r"can't|would)\b"
)
_NEGATED_STATE = (
    r"(?:(?:(?:at|within) (?:the )?)?(?:upper )?(?:normal limits|limits?(?: of)? normal)|"
    r"(?:top|upper|high)[- ]normal|normal|unremarkable|wnl|negative|absent|gone|maintained|preserved|"
    r"(?:been )?(?:resolved|cleared|removed)|"
    r"no longer (?:seen|present|visible|visualized|identified|evident|demonstrated|noted|appreciated)|"
    r"not (?:(?:significantly|substantially|appreciably|markedly|grossly|definitely) )?"
    r"(?:enlarged|widened|dilated|seen|identified|present|evident|demonstrated|visualized|visible|"
    r"appreciated|noted|detected|observed|increased))\b"
)
# Up to two words between the verb and the state ("is now normal", "has since been removed"), but
# never "not" ("is not normal") or a conjunction.
_GAP = r"(?: (?!not\b|and\b|but\b|or\b)[\w-]+){0,2}? "
NEGATION_AT_PREDICATE = r"(?:is|are|was|were|has|have|appears?|remains?|seems?|looks?)" + _GAP + _NEGATED_STATE
# Verbless: "heart size normal", "heart and mediastinum normal", "heart size upper limits normal".
NEGATION_RIGHT_AFTER = (
    r"\s*:?\s*(?:(?!(?:not|but|with|without|is|are|was|were|has|have|may|might|could)\b)[\w-]+ ){0,4}"
    + _NEGATED_STATE
)

UNCERTAINTY_AT_PREDICATE = (
    r"(?:(?:may|might|could|can|would) (?:also |still )?be (?:\w+ )?"
    r"(?:present|seen|noted|visualized|visible|identified|obscured|developing|there|enlarged|increased|"
    r"widened|prominent|accentuated|exaggerated|larger|worse|worsened|consideration)|"
    r"(?:cannot|can ?not|can't|could not) (?:be )?(?:entirely |completely |totally |definitely |well )?"
    r"(?:excluded|ruled out|assessed|evaluated)|"
    r"(?:is|are|was|were|appears?|remains?)(?: (?:now|also|still))? "
    r"(?:suspected|questioned|questionable|possible|probable|less likely|unlikely|borderline|"
    r"not (?:entirely |completely |totally |definitely )?(?:excluded|ruled out)|"
    r"difficult to (?:exclude|assess|evaluate)|obscured|(?:also )?(?:in|within) the differential|"
    r"(?:a|another) (?:\w+ )?consideration|"
    r"(?:not well|poorly|incompletely|not clearly|not entirely)[- ](?:seen|visualized|evaluated|assessed|demonstrated)))\b"
)
UNCERTAINTY_RIGHT_AFTER = r"\s*(?:suspected|questioned|borderline|less likely|unlikely|not excluded|\?)"

UNCERTAINTY_BEFORE = (
    r"\bdifferential\b[^.;]*?\binclud(?:e|es|ing)\b|"
    r"\b(?:possible|possibly|probable|probably|question(?:able|ed|s)?|suspect(?:s|ed)?|suspicious|"
    r"suspicion|concern(?:ing)?|worrisome|may|might|could|would|versus|vs|"
    r"suggest(?:s|ed|ing|ive|ion)?|presum(?:ed|ably|ptive)|equivocal|indeterminate|uncertain|borderline|"
    r"differential|consider(?:ed|ing)?|favou?r(?:s|ed)?|correlat\w*|less likely|unlikely)\b"
)

# "atelectasis or pneumonia", "effusion versus thickening": CheXpert calls both sides uncertain.
ALTERNATIVE_AFTER = r"\s*(?:[\w-]+ )?(?:or|versus|vs)\b"
ALTERNATIVE_BEFORE = r"\b(?:or|versus|vs)\b(?= (?:\S+ ){0,2}$)"

# ----------------------------------------------------------------------------- clauses

# Where the scope of a cue ends: sentence ends, semicolons, line breaks, and conjunctions that
# start a new statement.
CLAUSE_BREAK = (
    r"[.!?](?:\s|$)|;|\n|"
    r"\b(?:but|however|although|though|except|aside from|apart from|whereas|"
    r"with the exception of)\b|"
    r", there (?:is|are)\b"
)
