"""Queries only the evaluations ask: about an object the scene does not hold ("not here", eval/presence.py)
and about every object of a kind ("all the fruit", eval/instances.py). Training asks neither: its data has
one target per query (queries.make_queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keyseg_core.scenes.compose import ObjectInfo
from keyseg_core.scenes.knowledge import Knowledge
from keyseg_core.scenes.queries import HELD_OUT_TEMPLATES, Query, QuerySpec, pick_template, render_query, resolve

ABSENT_TYPES = ("name", "use", "property")  # kind/size/spatial name no single category when none is there


def absent_specs(target: str, objects: Sequence[ObjectInfo], kb: Knowledge) -> list[QuerySpec]:
    """Specs about `target` that nothing in the scene answers: the target is not there, and no object
    holds the fact (not even arguably, `also`) or has the noun's kind. Empty when `target` is present."""
    if any(o.category == target for o in objects):
        return []
    cat = kb.category(target)
    specs = [QuerySpec("name", target)]
    specs += [QuerySpec("use", target, fact=f) for f in cat.uses]
    specs += [QuerySpec("property", target, fact=f, noun_kind=n) for f in cat.properties for n in (None, *cat.kinds)]
    specs = [s for s in specs if s.type == "name" or target in kb.facts[s.fact].members]
    resolved = [(s, resolve(s, objects, kb)) for s in specs]
    return [s for s, r in resolved if not (r.matches or r.ambiguous)]


def absent_query(objects: Sequence[ObjectInfo], kb: Knowledge, rng: np.random.Generator, *, test: bool,
                 categories: Sequence[str] | None = None) -> Query:
    """One query about an object the scene does not hold ("not here": the right answer is nothing),
    worded like the present ones (held-out templates on test). Its type is drawn from ABSENT_TYPES
    among those some absent category supports; `categories` limits the absent targets."""
    present = {o.category for o in objects}
    pool = [c for c in (categories or sorted(kb.categories)) if c not in present]
    for i in rng.permutation(len(pool)):
        specs = absent_specs(pool[int(i)], objects, kb)
        if specs:
            qtype = ABSENT_TYPES[int(rng.integers(len(ABSENT_TYPES)))]
            of_type = [s for s in specs if s.type == qtype] or specs
            return render_query(of_type[int(rng.integers(len(of_type)))], kb, rng, test)
    raise ValueError(f"no category outside this scene ({sorted(present)}) can be asked about")


# "all the fruit": every object of a kind the scene holds two or more of (keyseg eval-instances counts them).
ALL_TEMPLATES: tuple[str, ...] = (
    "all the {plural}",
    "Segment all the {plural}.",
    "Show me every {noun} in this picture.",
    "Where are the {plural} in this image?",
    "Find each {noun} you can see.",  # test only (the last HELD_OUT_TEMPLATES)
    "Mark all of the {plural} here.",
)


@dataclass(frozen=True)
class MultiQuery:
    """A query about several objects: every category of `kind` in the scene."""

    kind: str
    targets: tuple[str, ...]
    text: str


def multi_instance_query(objects: Sequence[ObjectInfo], kb: Knowledge, rng: np.random.Generator, *,
                         test: bool) -> MultiQuery | None:
    """One "all the <kind>" query over a kind with >= 2 objects in the scene (None when none has)."""
    kinds = sorted({k for o in objects for k in kb.category(o.category).kinds})
    groups = [(k, tuple(o.category for o in objects if kb.has_kind(o.category, k))) for k in kinds]
    groups = [(k, members) for k, members in groups if len(members) >= 2]
    if not groups:
        return None
    kind, members = groups[int(rng.integers(len(groups)))]
    _, template = pick_template(rng, ALL_TEMPLATES, HELD_OUT_TEMPLATES, test)
    noun = kb.kinds[kind]
    return MultiQuery(kind, members, template.format(noun=noun.noun, plural=noun.plural))
