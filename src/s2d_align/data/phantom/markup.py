"""Annotated sentence templates: the report's tokens and their RadGraph entities written in one string.

Writing the RadGraph annotation beside each template (rather than tagging
finished text afterwards) keeps text and graph consistent by construction.
A template is a whitespace-separated list of tokens; a token may carry an
entity after a slash::

    {size}/DP>e {side}/A>p pleural/A#p effusion/DP#e@p .

- ``word/A`` is an anatomy entity (``ANAT-DP``); ``word/DP``, ``word/DA``,
  ``word/U`` are observations (``OBS-DP``, ``OBS-DA``, ``OBS-U``).
- ``#n`` names the entity; ``>n`` it modifies ``n``; ``@n`` it is located at
  ``n``; ``~n`` it is suggestive of ``n``. A token may carry several relations.
- ``a_b_c/DP`` is one entity spanning the tokens ``a b c``.
- ``{slot}`` is filled before parsing, by a word or by a fragment that is
  itself markup (e.g. a lobe with its own anatomy entities).

Names are local to one statement; :func:`parse` checks that every relation
target is defined. The first word of each sentence is capitalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

ENTITY_LABELS = {"A": "ANAT-DP", "DP": "OBS-DP", "DA": "OBS-DA", "U": "OBS-U"}
RELATION_MARKS = {">": "modify", "@": "located_at", "~": "suggestive_of"}
_ANNOTATION = re.compile(r"^(A|DP|DA|U)((?:[#>@~][A-Za-z0-9]+)*)$")
_PART = re.compile(r"([#>@~])([A-Za-z0-9]+)")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'.][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")
SENTENCE_END = "."


class MarkupError(ValueError):
    """A template that cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class Mention:
    """One entity of a parsed statement; ``relations`` name their targets by the statement's local names."""

    start: int
    end: int  # inclusive, as RadGraph's end_ix
    label: str
    name: str | None
    relations: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Parsed:
    tokens: tuple[str, ...]
    mentions: tuple[Mention, ...]


def parse(template: str, slots: Mapping[str, str] | None = None) -> Parsed:
    """Fill ``template``'s slots and read its tokens and entities."""
    try:
        text = template.format_map(dict(slots or {}))
    except (KeyError, IndexError, ValueError) as err:
        raise MarkupError(f"template {template!r}: slot {err} is not filled") from err
    tokens: list[str] = []
    mentions: list[Mention] = []
    for item in text.split():
        word, slash, annotation = item.partition("/")
        words = word.split("_")
        if not all(words):
            raise MarkupError(f"template {template!r}: empty word in {item!r}")
        start = len(tokens)
        tokens.extend(words)
        if not slash:
            continue
        match = _ANNOTATION.match(annotation)
        if not match:
            raise MarkupError(f"template {template!r}: cannot read annotation {item!r}")
        name, relations = None, []
        for mark, target in _PART.findall(match.group(2)):
            if mark == "#":
                if name is not None:
                    raise MarkupError(f"template {template!r}: {item!r} has two names")
                name = target
            else:
                relations.append((RELATION_MARKS[mark], target))
        mentions.append(Mention(start, len(tokens) - 1, ENTITY_LABELS[match.group(1)], name, tuple(relations)))
    names = [m.name for m in mentions if m.name]
    if len(names) != len(set(names)):
        raise MarkupError(f"template {template!r}: a name is used twice in {names}")
    missing = {t for m in mentions for _, t in m.relations} - set(names)
    if missing:
        raise MarkupError(f"template {template!r}: relation targets {sorted(missing)} are not defined")
    return Parsed(_capitalise(tokens), tuple(mentions))


def _capitalise(tokens: list[str]) -> tuple[str, ...]:
    out, start = [], True
    for token in tokens:
        out.append(token[0].upper() + token[1:] if start and token[0].isalpha() else token)
        start = token == SENTENCE_END
    return tuple(out)


def tokenize(text: str) -> list[str]:
    """Split report text into RadGraph-style tokens: words (with inner hyphens or decimals) and punctuation."""
    return _TOKEN.findall(text)


def detokenize(tokens: tuple[str, ...] | list[str]) -> str:
    """Report text from tokens: spaces between words, none before punctuation."""
    return re.sub(r" ([.,;:])", r"\1", " ".join(tokens))


def sentences(tokens: tuple[str, ...] | list[str]) -> list[list[str]]:
    """Tokens grouped into sentences, each ending with its full stop."""
    groups, current = [], []
    for token in tokens:
        current.append(token)
        if token == SENTENCE_END:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups
