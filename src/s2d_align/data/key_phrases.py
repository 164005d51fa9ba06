"""Stage-3 key phrases from RadGraph annotations (paper: Stage 3 and appendix A).

Two steps. :func:`compose_phrases` turns each positive observation (``OBS-DP``)
of a report's RadGraph graph into a short description: the observation with
its modifiers in report order, its ``located_at`` anatomy (with that anatomy's
own modifiers) and what it is ``suggestive_of``. A refiner then rewrites each
description into a fluent clinical phrase; refiners live beside this module
and all satisfy :class:`Refiner`. The ``none`` refiner keeps the composed text.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from s2d_align.data.manifest import KeyPhrase
from s2d_align.data.radgraph import Annotation, Entity

COMPOSED_SOURCE = "radgraph:composed"


def _span(annotation: Annotation, head: Entity, relation: str = "modify") -> str:
    """The head entity with every entity that modifies it, in report order."""
    parts = {head.start_ix: head.tokens}
    for modifier in annotation.sources(head, relation):
        if modifier.label.endswith("-DA"):
            continue
        parts.setdefault(modifier.start_ix, modifier.tokens)
    return " ".join(parts[i] for i in sorted(parts))


def _is_head(annotation: Annotation, entity: Entity) -> bool:
    """An observation that modifies another observation is part of that one's phrase, not its own."""
    return not any(t.is_observation for t in annotation.targets(entity, "modify"))


def compose_phrases(annotation: Annotation) -> list[str]:
    """One short description per positive head observation, in report order, without duplicates."""
    phrases: list[str] = []
    for entity in sorted(annotation.entities.values(), key=lambda e: e.start_ix):
        if entity.label != "OBS-DP" or not _is_head(annotation, entity):
            continue
        text = _span(annotation, entity)
        locations = [_span(annotation, a) for a in annotation.targets(entity, "located_at")]
        if locations:
            text += " in " + " and ".join(locations)
        suggested = [_span(annotation, o) for o in annotation.targets(entity, "suggestive_of")]
        if suggested:
            text += ", suggestive of " + " or ".join(suggested)
        if text not in phrases:
            phrases.append(text)
    return phrases


class Refiner(Protocol):
    """Rewrites composed descriptions into fluent phrases (appendix A's few-shot LLM prompt)."""

    name: str

    def refine(self, composed: Sequence[str]) -> list[KeyPhrase]: ...


class NoRefiner:
    """Keeps the composed descriptions as they are."""

    name = "none"

    def refine(self, composed: Sequence[str]) -> list[KeyPhrase]:
        return [KeyPhrase(text, COMPOSED_SOURCE) for text in composed]


def refine_all(composed: Mapping[str, Sequence[str]], refiner: Refiner) -> dict[str, tuple[KeyPhrase, ...]]:
    """Refine the composed descriptions of many studies in one call, so the refiner can batch them.

    Identical descriptions (``mild cardiomegaly`` occurs in thousands of
    reports) are refined once; each study gets its own phrases back in order.
    """
    unique = list(dict.fromkeys(text for texts in composed.values() for text in texts))
    refined = dict(zip(unique, refiner.refine(unique))) if unique else {}
    return {key: tuple(refined[text] for text in texts) for key, texts in composed.items()}
