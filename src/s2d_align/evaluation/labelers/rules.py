"""An offline CheXpert-style labeler: the 14 observations from a report's text, by rules.

The CheXpert labeler (Irvin et al., 2019) works in three stages, and so does
this one:

1. **Mention extraction.** The report is lower-cased and cut into clauses
   (sentence ends, ``;``, line breaks, ``but`` / ``however`` / ``except`` ...).
   Each observation's mention phrases are matched in every clause, minus the
   "unmention" phrases (:mod:`.vocabulary`).
2. **Classification** of each mention, in CheXpert's order: uncertainty
   patterns that contain a negation (``cannot exclude X``, ``no new X``)
   first, then negation, then the other uncertainty patterns; a mention no
   rule touches is positive. Cues *before* the mention reach it unless a verb
   closes their scope first ("no effusion is seen, the heart is enlarged");
   ``normal`` / ``unremarkable`` reach only a few words. Cues *after* the
   mention are read at its predicate ("heart size **is normal**", "the tube
   **has been removed**", "pneumonia **cannot be excluded**").
3. **Aggregation** per report, CheXpert's rules: one label per observation;
   negative + uncertain -> uncertain, negative + positive -> positive,
   uncertain + positive -> positive; a positive or uncertain *heart failure* /
   *CHF* adds an uncertain Cardiomegaly; No Finding is 1 when no observation
   other than Support Devices (and none of the "other findings" such as
   emphysema or granuloma) is positive or uncertain, else blank.

Labels: 1 positive, 0 negative, -1 uncertain, None blank (not mentioned).

Clause results are memoised: generated reports repeat sentences heavily, so
labeling a test set costs little more than its distinct sentences.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from s2d_align.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from s2d_align.evaluation.labelers import vocabulary as vocab

VERSION = "2"

_SUPPORT_DEVICES = "Support Devices"
_NO_FINDING = "No Finding"
_CARDIAC = ("Cardiomegaly", "Enlarged Cardiomediastinum")
_WINDOW = 300  # characters of the clause searched for cues on each side of a mention (~50 words)


@dataclass(frozen=True)
class Mention:
    """One matched phrase, with the label its clause gives it."""

    observation: str  # one of OBSERVATIONS (not No Finding), or vocabulary.OTHER_FINDING
    text: str
    label: int
    clause: str


def _words(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b")


def _any(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


class _Patterns:
    """The vocabulary, compiled once per process."""

    def __init__(self) -> None:
        self.mentions = {obs: _words(p) for obs, p in vocab.MENTIONS.items()}
        self.unmentions = {obs: _words(p) for obs, p in vocab.UNMENTIONS.items()}
        self.always_uncertain = {obs: re.compile(p) for obs, p in vocab.ALWAYS_UNCERTAIN.items()}
        self.heart_failure = re.compile(vocab.HEART_FAILURE)
        self.structure = re.compile(vocab.STRUCTURE)
        self.stability = re.compile(vocab.STABILITY)
        self.size_words = re.compile(vocab.SIZE_WORDS)
        self.pre_negation_uncertain = _any(vocab.PRE_NEGATION_UNCERTAIN_BEFORE)
        self.negation_before = _any(vocab.NEGATION_BEFORE)
        self.negating_modifier = re.compile(vocab.NEGATING_MODIFIER_BEFORE)
        self.scope_closer = re.compile(vocab.SCOPE_CLOSER)
        self.predicate_verb = re.compile(vocab.PREDICATE_VERB)
        self.negation_at_predicate = re.compile(vocab.NEGATION_AT_PREDICATE)
        self.negation_right_after = re.compile(vocab.NEGATION_RIGHT_AFTER)
        self.uncertainty_at_predicate = re.compile(vocab.UNCERTAINTY_AT_PREDICATE)
        self.uncertainty_right_after = re.compile(vocab.UNCERTAINTY_RIGHT_AFTER)
        self.uncertainty_before = re.compile(vocab.UNCERTAINTY_BEFORE)
        self.alternative_before = re.compile(vocab.ALTERNATIVE_BEFORE)
        self.alternative_after = re.compile(vocab.ALTERNATIVE_AFTER)
        self.clause_break = re.compile(vocab.CLAUSE_BREAK)
        self.and_or = re.compile(r"\band ?/ ?or\b|\bandor\b")
        self.slash = re.compile(r"(?<=[a-z])/(?=[a-z])")
        self.glued_sentence = re.compile(r"(?<=[a-z])\.(?=[a-z]{2})")
        self.spaces = re.compile(r"[ \t\r\f\v]+")


_COMPILED: _Patterns | None = None


def _patterns() -> _Patterns:
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = _Patterns()
    return _COMPILED


class RuleLabeler:
    """Label reports with the 14 CheXpert observations (see the module docstring for the rules)."""

    name = "rules"
    version = VERSION

    def __init__(self, cache_size: int = 200_000) -> None:
        self._p = _patterns()
        self._cache: dict[str, tuple[tuple[str, str, int], ...]] = {}
        self._cache_size = cache_size

    # ------------------------------------------------------------------ public

    def label(self, texts: Iterable[str]) -> list[dict[str, int | None]]:
        """One ``{observation: 1 | 0 | -1 | None}`` dict (all 14, CheXbert order) per text."""
        return [self._aggregate(self.mentions(text)) for text in texts]

    def mentions(self, text: str) -> list[Mention]:
        """Every mention found in ``text`` with its clause-level label (for error analysis)."""
        found = []
        for clause in self._clauses(text):
            for observation, phrase, label in self._clause_mentions(clause):
                found.append(Mention(observation, phrase, label, clause))
        return found

    # ------------------------------------------------------------------ stages

    def _clauses(self, text: str) -> list[str]:
        p = self._p
        text = text.lower()
        text = p.and_or.sub("or", text)
        text = p.slash.sub(" or ", text)
        text = p.glued_sentence.sub(". ", text)
        text = p.spaces.sub(" ", text)
        return [c.strip() for c in p.clause_break.split(text) if c and c.strip()]

    def _clause_mentions(self, clause: str) -> tuple[tuple[str, str, int], ...]:
        cached = self._cache.get(clause)
        if cached is not None:
            return cached
        p = self._p
        found = []
        for observation, pattern in p.mentions.items():
            matches = list(pattern.finditer(clause))
            if not matches:
                continue
            unmention = p.unmentions.get(observation)
            blocked = [m.span() for m in unmention.finditer(clause)] if unmention else []
            for match in matches:
                start, end = match.span()
                if any(start < b_end and end > b_start for b_start, b_end in blocked):
                    continue
                found.append((observation, match.group(), self._classify(observation, clause, start, end)))
        result = tuple(found)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[clause] = result
        return result

    def _classify(self, observation: str, clause: str, start: int, end: int) -> int:
        p = self._p
        # Cues are looked for within a window around the mention: a run-on clause (a generated report
        # looping without full stops) then costs linear, not quadratic, time.
        before, after, phrase = clause[max(0, start - _WINDOW):start], clause[end:end + _WINDOW], clause[start:end]
        if self._cue_reaches(p.pre_negation_uncertain, before):
            return UNCERTAIN
        if (
            self._cue_reaches(p.negation_before, before)
            or self._cue_reaches(p.negating_modifier, before)
            or p.negation_right_after.match(after)
            or self._at_predicate(p.negation_at_predicate, after)
        ):
            return NEGATIVE
        always = p.always_uncertain.get(observation)
        if always is not None and always.fullmatch(phrase):
            return UNCERTAIN
        if (
            self._cue_reaches(p.uncertainty_before, before)
            or p.alternative_before.search(before)
            or p.alternative_after.match(after)
            or p.uncertainty_right_after.match(after)
            or self._at_predicate(p.uncertainty_at_predicate, after)
        ):
            return UNCERTAIN
        if observation in _CARDIAC and p.structure.fullmatch(phrase) and self._only_stable(before + phrase + after):
            return UNCERTAIN
        return POSITIVE

    def _cue_reaches(self, cue: re.Pattern[str], before: str) -> bool:
        """Whether the last ``cue`` in ``before`` still governs the mention.

        A closing verb ends the cue's scope only once the negated phrase has
        begun: in "no visualized pneumothorax" the participle right after
        ``no`` is part of the phrase, in "no pneumothorax is seen, ..." the
        verb ends it.
        """
        last = None
        for last in cue.finditer(before):
            pass
        if last is None:
            return False
        for closer in self._p.scope_closer.finditer(before, last.end()):
            if before[last.end():closer.start()].strip():
                return False
        return True

    def _at_predicate(self, cue: re.Pattern[str], after: str) -> bool:
        verb = self._p.predicate_verb.search(after)
        return verb is not None and cue.match(after, verb.start()) is not None

    def _only_stable(self, clause: str) -> bool:
        """A clause that calls a cardiac structure stable without describing its size."""
        p = self._p
        if not p.stability.search(clause):
            return False
        return not p.size_words.search(p.stability.sub(" ", clause))

    def _aggregate(self, mentions: list[Mention]) -> dict[str, int | None]:
        p = self._p
        labels: dict[str, list[int]] = defaultdict(list)
        no_finding = True
        for mention in mentions:
            present = mention.label in (POSITIVE, UNCERTAIN)
            if present and mention.observation != _SUPPORT_DEVICES:
                no_finding = False
            if mention.observation == vocab.OTHER_FINDING:
                continue
            if present and p.heart_failure.fullmatch(mention.text):
                labels["Cardiomegaly"].append(UNCERTAIN)
            labels[mention.observation].append(mention.label)
        result: dict[str, int | None] = {}
        for observation in OBSERVATIONS:
            if observation == _NO_FINDING:
                result[observation] = POSITIVE if no_finding else None
            else:
                result[observation] = _resolve(labels.get(observation))
        return result


def _resolve(found: list[int] | None) -> int | None:
    """CheXpert's conflict rules for several mentions of one observation."""
    if not found:
        return None
    kinds = set(found)
    if len(kinds) == 1:
        return found[0]
    if NEGATIVE in kinds and UNCERTAIN in kinds:
        return UNCERTAIN
    return POSITIVE
