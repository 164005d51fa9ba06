"""Rule-based key phrases: the positive findings of a report, with their modifiers and location.

Stage 3 wants RadGraph's positive observations (``OBS-DP``) with their
anatomy. IU X-Ray has no RadGraph annotations and no RadGraph model runs
offline here, so this is the offline fallback: a small NegEx-style extractor
over the FINDINGS text. Its phrases carry the source ``rules:<dataset>`` so a
run always says which kind of phrase it trained on.

Per sentence: find finding words (``effusion``, ``granuloma``, ``opacity``
...) and predicate patterns (``the heart is mildly enlarged`` ->
``mild cardiomegaly``); drop a finding preceded in its clause by a negation
cue (``no``, ``without``, ``free of`` ...) or an uncertainty cue (``may
represent``, ``possible`` ...), or followed in its clause by a negated
predicate (``is not seen``, ``is absent``, ``has resolved``, ``no longer
present``, ``ruled out`` ...), since only definite findings are wanted;
prepend the run of modifier words right before it (``small right pleural``);
append the anatomy that follows ``in``/``within``/``of``/... (``in right
upper lobe``). Precision over recall: a sentence the rules do not understand
yields nothing rather than a wrong phrase.
"""

from __future__ import annotations

import re

FINDINGS = {
    "effusion", "effusions", "pneumothorax", "opacity", "opacities", "opacification", "consolidation",
    "consolidations", "atelectasis", "cardiomegaly", "edema", "nodule", "nodules", "mass", "masses",
    "granuloma", "granulomas", "granulomata", "scarring", "scar", "scars", "hernia", "fracture", "fractures",
    "deformity", "calcification", "calcifications", "emphysema", "hyperinflation", "hyperexpansion",
    "pneumonia", "infiltrate", "infiltrates", "changes", "spondylosis", "osteophytes", "kyphosis",
    "scoliosis", "thickening", "congestion", "pacemaker", "sternotomy", "clips", "catheter", "tube",
    "eventration", "elevation", "adenopathy", "lymphadenopathy", "tortuosity", "ectasia", "markings", "disease", "lesion", "lesions", "cabg", "stent",
    "prosthesis", "hardware", "port",
}
# Heads that mean nothing without a modifier ("changes" alone is not a finding, "degenerative changes" is).
NEEDS_MODIFIER = {"changes", "markings", "disease", "elevation", "thickening", "deformity", "tube"}

MODIFIERS = {
    "small", "large", "mild", "mildly", "moderate", "moderately", "severe", "minimal", "trace", "tiny",
    "subtle", "calcified", "noncalcified", "patchy", "focal", "streaky", "linear", "subsegmental", "plate-like",
    "platelike", "chronic", "old", "healed", "degenerative", "diffuse", "interstitial", "airspace",
    "air-space", "hazy", "increased", "nodular", "multiple", "bilateral", "bibasilar", "basilar", "basal",
    "left", "right", "upper", "lower", "middle", "mid", "apical", "perihilar", "retrocardiac", "pleural",
    "pulmonary", "vascular", "hiatal", "thoracic", "lumbar", "cervical", "dextroscoliosis",
    "coarse", "coarsened", "prominent", "granulomatous", "surgical", "costophrenic", "rib",
    "healing", "compression", "dual-lead", "dual", "lead", "enteric", "endotracheal", "nasogastric",
    "central", "venous", "chest", "wedge", "loculated", "lobar", "hilar", "mediastinal", "aortic",
    "emphysematous", "obstructive", "hyperexpanded", "hyperinflated", "fibrotic", "spinal",
    "thoracolumbar", "anterior", "posterior", "lateral", "median", "vertebral", "body", "atherosclerotic",
}
LOCATION_WORDS = {
    "right", "left", "bilateral", "upper", "middle", "lower", "mid", "lobe", "lobes", "lung", "lungs",
    "base", "bases", "apex", "apices", "hemithorax", "zone", "zones", "lingula", "hilum", "hila",
    "perihilar", "retrocardiac", "costophrenic", "angle", "angles", "thoracic", "spine", "lumbar",
    "cervical", "hemidiaphragm", "hemidiaphragms", "aorta", "aortic", "arch", "knob", "ribs", "rib",
    "posterior", "anterior", "lateral", "medial", "field", "fields", "region", "mediastinum", "clavicle",
    "humerus", "shoulder", "svc", "atrium", "lingular", "basilar", "midlung", "midlungs", "spinal",
    "vertebral", "body", "bodies", "thoracolumbar", "junction", "upper/mid", "infrahilar", "suprahilar",
    "paratracheal", "subcarinal", "axilla", "chest", "wall", "quadrant", "abdomen", "glenohumeral",
    "acromioclavicular", "joint", "joints", "vena", "cava", "superior", "inferior", "ventricle",
}
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)$|^t\d+$|^l\d+$")
_LOCATION_INTRO = ("in", "within", "at", "of", "involving", "along", "overlying", "over", "projecting")

_NEGATION = re.compile(
    r"\b(no|not|without|negative for|free of|clear of|absence of|absent|resolved|removal of|rather than"
    r"|no evidence of|no signs? of|nor|neither|exclude[sd]?|ruled out)\b"
)
_UNCERTAIN = re.compile(
    r"\b(may|might|possible|possibly|probable|probably|questionable|question of|suspicious|suggest|suggests"
    r"|suggestive|cannot be excluded|can not be excluded|could|likely|unlikely|versus|vs|concern for|"
    r"differential|consider|considered|represent|representing|or)\b"
)
# Negation stated after the finding, within its clause ("pleural effusion is not seen", "... has resolved").
_NEGATION_AFTER = re.compile(
    r"\b(?:not|no longer)\s+(?:\w+ly\s+)?(?:seen|identified|present|visualized|visualised|visible|demonstrated"
    r"|appreciated|evident|detected|noted)\b|\babsent\b|\b(?:has|have|is|are)\s+(?:\w+\s+)?resolved\b"
    r"|\bruled out\b|\b(?:is|are|been)\s+excluded\b"
)
# NegEx scope: a cue reaches to the end of its sentence ("no effusion, pneumothorax or edema") unless a
# conjunction of contrast or a semicolon ends it first.
_SCOPE_END = re.compile(r"\b(but|however|although|though|except|otherwise|whereas)\b|;")

# Findings stated as predicates or fixed expressions: (pattern, template). ``{sev}`` is the
# severity adjective from the adverb in group 1 ("mildly" -> "mild "), ``{adv}`` the adverb as written.
_ADVERB = r"(?:(\w+)\s+)?"
_PREDICATES = (
    (re.compile(r"\b(?:heart|heart size|cardiac silhouette|cardiac size|cardiomediastinal silhouette)\s+"
                r"(?:is|are|appears|remains)\s+" + _ADVERB + r"(?:enlarged|increased)\b"), "{sev}cardiomegaly"),
    (re.compile(r"\blungs?\s+(?:is|are|appear)\s+" + _ADVERB + r"(?:hyperinflated|hyperexpanded)\b"),
     "{sev}hyperinflated lungs"),
    (re.compile(r"\b()(?:hyperinflated|hyperexpanded|overinflated) lungs\b"), "hyperinflated lungs"),
    (re.compile(r"\baorta\s+(?:is|appears)\s+" + _ADVERB + r"tortuous\b"), "{adv}tortuous aorta"),
    (re.compile(r"\bmediastinum\s+(?:is|appears)\s+" + _ADVERB + r"widened\b"), "{adv}widened mediastinum"),
    (re.compile(r"\blung volumes\s+(?:is|are|remain)\s+" + _ADVERB + r"(?:low|decreased|diminished)\b"),
     "low lung volumes"),
    (re.compile(r"\b()low lung volumes\b"), "low lung volumes"),
)
_SEVERITY = {"mildly": "mild", "moderately": "moderate", "severely": "severe", "markedly": "marked", "slightly": "mild"}


def _clause_prefix(sentence: str, position: int) -> str:
    """The text between the last scope boundary before ``position`` and ``position``."""
    prefix = sentence[:position]
    ends = list(_SCOPE_END.finditer(prefix))
    return prefix[ends[-1].end() :] if ends else prefix


def _clause_suffix(sentence: str, position: int) -> str:
    """The text between ``position`` and the next scope boundary (or the end of the sentence)."""
    suffix = sentence[position:]
    end = _SCOPE_END.search(suffix)
    return suffix[: end.start()] if end else suffix


def _definite(sentence: str, start: int, end: int) -> bool:
    """Neither negated nor uncertain before ``start``, nor negated after ``end``, within the clause."""
    clause = _clause_prefix(sentence, start)
    if _NEGATION.search(clause) or _UNCERTAIN.search(clause):
        return False
    return not _NEGATION_AFTER.search(_clause_suffix(sentence, end))


def _modifiers_before(words: list[str], index: int) -> list[str]:
    found: list[str] = []
    for word in reversed(words[max(0, index - 4) : index]):
        if word in MODIFIERS or _ORDINAL.match(word):
            found.insert(0, word)
        else:
            break
    return found


def _location_after(words: list[str], index: int) -> list[str]:
    """The anatomy following the finding (``in the right upper lobe`` -> right upper lobe)."""
    position = index + 1
    if position < len(words) and words[position] in _LOCATION_INTRO:
        position += 1
        while position < len(words) and words[position] in ("the", "both", "a", "an"):
            position += 1
        location = []
        while position < len(words) and (words[position] in LOCATION_WORDS or _ORDINAL.match(words[position])):
            location.append(words[position])
            position += 1
        if any(w not in ("right", "left", "bilateral", "upper", "lower", "mid", "middle") for w in location):
            return location
    return []


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text.lower()).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _words(sentence: str) -> list[tuple[str, int]]:
    return [(m.group(0), m.start()) for m in re.finditer(r"[a-z0-9][a-z0-9/\-]*", sentence)]


def extract_positive_findings(text: str) -> list[str]:
    """Short descriptions of the definite positive findings of a report, in order, without duplicates."""
    phrases: list[str] = []
    for sentence in _sentences(text):
        for pattern, template in _PREDICATES:
            for match in pattern.finditer(sentence):
                if not _definite(sentence, match.end(), match.end()):
                    continue
                adverb = match.group(1) or ""
                severity = _SEVERITY.get(adverb, "")
                phrase = template.format(sev=f"{severity} " if severity else "", adv=f"{adverb} " if adverb in _SEVERITY else "")
                if phrase not in phrases:
                    phrases.append(phrase)
        tokens = _words(sentence)
        words = [w for w, _ in tokens]
        for index, (word, offset) in enumerate(tokens):
            if word not in FINDINGS or not _definite(sentence, offset, offset + len(word)):
                continue
            modifiers = _modifiers_before(words, index)
            if word in NEEDS_MODIFIER and not modifiers:
                continue
            phrase = " ".join(modifiers + [word])
            location = _location_after(words, index)
            if location and " ".join(location) not in phrase:
                phrase += " in " + " ".join(location)
            if phrase not in phrases:
                phrases.append(phrase)
    return phrases
