"""Reasoning queries over a composed scene, and the rule that decides what a query refers to.

`resolve` is the one rule: the generator keeps a query only when it resolves to its target alone,
and the tests check generated data with the same function. Rules (see docs/data.md):

- name: the category (scene categories are distinct).
- use / property: objects for which the fact holds (members or `also` in knowledge.yaml).
- kind: objects of that kind.
- size: objects of the kind, needing >= 2; the largest (smallest) must have >= SIZE_RATIO times
  (<= 1/SIZE_RATIO) the visible pixel area of every other, and the same must hold for the area of
  the visible bounding box; else all are ambiguous.
- spatial: box centres of visible pixels against the reference's visible box. "left of" needs the
  centre at least BAND x reference width left of the reference's left edge and more left than up
  or down (a 45-degree cone); any other candidate whose centre is not at least BAND x width right
  of that edge is ambiguous. Same for right/above/below. With a kind noun only that kind counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from keyseg_core.scenes.compose import ObjectInfo
from keyseg_core.scenes.knowledge import Knowledge

QUERY_TYPES = ("name", "use", "property", "kind", "spatial", "size")
DEFAULT_WEIGHTS = {"name": 0.15, "use": 0.25, "property": 0.2, "kind": 0.15, "spatial": 0.15, "size": 0.1}
SIZE_RATIO = 1.3
BAND = 0.25
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
# superlative / comparative pairs; the last pair is reserved for the test split
SIZE_WORDS = {
    "largest": (("largest", "larger"), ("biggest", "bigger")),
    "smallest": (("smallest", "smaller"), ("tiniest", "tinier")),
}
HELD_OUT_TEMPLATES = 2  # the last two templates of each type are test-only
TEST_HELD_OUT_PROBABILITY = 0.5  # test picks a held-out template (phrasing) this often

# (template, is_sentence). Placeholders: name, is (is/are for the name), use, prop, noun, plural, rel,
# ref, sup, cmp.
TEMPLATES: dict[str, tuple[tuple[str, bool], ...]] = {
    "name": (
        ("the {name}", False),
        ("Where {is} the {name}?", True),
        ("Segment the {name}.", True),
        ("Please segment the {name} in this image.", True),
        ("Show me the {name}.", True),
        ("Can you find the {name}?", True),
        ("Highlight the {name} in this picture.", True),
        ("Which part of the image shows the {name}?", True),
    ),
    "use": (
        ("the object used for {use}", False),
        ("What could I use for {use}?", True),
        ("Which object in this picture is used for {use}?", True),
        ("Segment the thing people use for {use}.", True),
        ("Find something in this image that is meant for {use}.", True),
        ("Show me what someone would use for {use}.", True),
        ("I need something for {use}. Which object should I pick?", True),
        ("What in this scene would be good for {use}?", True),
    ),
    "property": (
        ("the {noun} that {prop}", False),
        ("Which {noun} {prop}?", True),
        ("Segment the {noun} that {prop}.", True),
        ("Find the {noun} in this image that {prop}.", True),
        ("Can you show me the {noun} that {prop}?", True),
        ("Point out the {noun} that {prop}.", True),
        ("There is one {noun} here that {prop}. Where is it?", True),
        ("Look at the picture: which {noun} {prop}?", True),
    ),
    "kind": (
        ("the {noun}", False),
        ("Which {noun} is in the picture?", True),
        ("Segment the {noun}.", True),
        ("Where is the {noun} in this image?", True),
        ("Find the only {noun} here.", True),
        ("Show me the {noun} in this scene.", True),
        ("There is exactly one {noun} in this scene; where is it?", True),
        ("Please mark the {noun} you can see.", True),
    ),
    "spatial": (
        ("the {noun} {rel} the {ref}", False),
        ("Which {noun} is {rel} the {ref}?", True),
        ("Segment the {noun} {rel} the {ref}.", True),
        ("Find the {noun} that is {rel} the {ref}.", True),
        ("Show me the {noun} located {rel} the {ref}.", True),
        ("Which {noun} can you see {rel} the {ref}?", True),
        ("Look {rel} the {ref}: which {noun} is there?", True),
        ("Point to the {noun} positioned {rel} the {ref}.", True),
    ),
    "size": (
        ("the {sup} {noun}", False),
        ("Which {noun} is the {sup}?", True),
        ("Segment the {sup} {noun}.", True),
        ("Find the {sup} {noun} in this image.", True),
        ("Of all the {plural}, which one is the {sup}?", True),
        ("Show me the {sup} {noun}.", True),
        ("There are several {plural} here; which one looks the {sup}?", True),
        ("Point out the {noun} that looks {cmp} than the other {plural}.", True),
    ),
}


@dataclass(frozen=True)
class QuerySpec:
    """What a query means, independent of wording. noun_kind None = "object"."""

    type: str
    target: str
    fact: str | None = None  # use / property
    noun_kind: str | None = None  # property / kind / spatial / size
    relation: str | None = None  # spatial
    reference: str | None = None  # spatial
    direction: str | None = None  # size: largest | smallest


@dataclass(frozen=True)
class Query:
    spec: QuerySpec
    text: str
    is_sentence: bool
    template: int  # index into TEMPLATES[spec.type]
    phrasing: int | None  # index of the fact phrasing / size word used, if any

    def to_json(self) -> dict:
        spec = {k: v for k, v in asdict(self.spec).items() if v is not None}
        return {**spec, "template": self.template, "phrasing": self.phrasing}


@dataclass(frozen=True)
class Resolution:
    matches: tuple[str, ...]  # categories that clearly satisfy the query
    ambiguous: tuple[str, ...]  # categories a reader might also take as meant

    @property
    def unique(self) -> str | None:
        return self.matches[0] if len(self.matches) == 1 and not self.ambiguous else None


def _axis(relation: str, obj: ObjectInfo, ref: ObjectInfo) -> tuple[float, float, float]:
    """(distance past the reference's edge, size of the reference on that axis, off-axis offset)."""
    cx, cy = obj.center
    rx0, ry0, rx1, ry1 = ref.bbox
    rcx, rcy = ref.center
    if relation == "left":
        return rx0 - cx, rx1 - rx0, abs(cy - rcy)
    if relation == "right":
        return cx - rx1, rx1 - rx0, abs(cy - rcy)
    if relation == "above":
        return ry0 - cy, ry1 - ry0, abs(cx - rcx)
    if relation == "below":
        return cy - ry1, ry1 - ry0, abs(cx - rcx)
    raise ValueError(f"unknown relation {relation!r}")


def _spatial(spec: QuerySpec, objects: Sequence[ObjectInfo], kb: Knowledge) -> Resolution:
    refs = [o for o in objects if o.category == spec.reference]
    if len(refs) != 1:
        return Resolution((), ())
    ref = refs[0]
    matches, ambiguous = [], []
    for obj in objects:
        if obj is ref or (spec.noun_kind and not kb.has_kind(obj.category, spec.noun_kind)):
            continue
        past, extent, off = _axis(spec.relation, obj, ref)
        band = BAND * extent
        centre_dist = past + extent / 2.0  # distance from the reference centre along the axis
        if past >= band and off <= centre_dist:
            matches.append(obj.category)
        elif past > -band:
            ambiguous.append(obj.category)
    return Resolution(tuple(matches), tuple(ambiguous))


def _box_area(obj: ObjectInfo) -> int:
    x0, y0, x1, y1 = obj.bbox
    return (x1 - x0) * (y1 - y0)


def _clearly_first(group: Sequence[ObjectInfo], measure, largest: bool) -> ObjectInfo | None:
    """The object whose measure beats every other's by SIZE_RATIO (largest) or 1/SIZE_RATIO."""
    ranked = sorted(group, key=measure, reverse=largest)
    best, second = measure(ranked[0]), measure(ranked[1])
    clear = best >= SIZE_RATIO * second if largest else best * SIZE_RATIO <= second
    return ranked[0] if clear else None


def _size(spec: QuerySpec, objects: Sequence[ObjectInfo], kb: Knowledge) -> Resolution:
    """Visible pixel area decides; the visible box area must agree (a thin ladder with few pixels
    still looks big), so the answer holds whichever way a reader judges size."""
    group = [o for o in objects if kb.has_kind(o.category, spec.noun_kind)]
    if len(group) < 2:
        return Resolution((), ())
    largest = spec.direction == "largest"
    by_pixels = _clearly_first(group, lambda o: o.visible, largest)
    by_box = _clearly_first(group, _box_area, largest)
    if by_pixels is not None and by_pixels is by_box:
        return Resolution((by_pixels.category,), ())
    return Resolution((), tuple(o.category for o in group))


def resolve(spec: QuerySpec, objects: Sequence[ObjectInfo], kb: Knowledge) -> Resolution:
    """What the query refers to in a scene, under the rules in this module's docstring."""
    if spec.type == "name":
        return Resolution(tuple(o.category for o in objects if o.category == spec.target), ())
    if spec.type in ("use", "property"):
        fact = kb.facts[spec.fact]
        return Resolution(tuple(o.category for o in objects if fact.holds(o.category)), ())
    if spec.type == "kind":
        return Resolution(tuple(o.category for o in objects if kb.has_kind(o.category, spec.noun_kind)), ())
    if spec.type == "size":
        return _size(spec, objects, kb)
    if spec.type == "spatial":
        return _spatial(spec, objects, kb)
    raise ValueError(f"unknown query type {spec.type!r}")


def is_valid(spec: QuerySpec, objects: Sequence[ObjectInfo], kb: Knowledge) -> bool:
    """True when the query refers to its target and nothing else (and the target is a true member)."""
    if spec.type in ("use", "property") and spec.target not in kb.facts[spec.fact].members:
        return False
    return resolve(spec, objects, kb).unique == spec.target


def candidate_specs(qtype: str, target: str, objects: Sequence[ObjectInfo], kb: Knowledge) -> list[QuerySpec]:
    """Every valid spec of one type for one target in this scene."""
    cat = kb.category(target)
    nouns: list[str | None] = [None, *cat.kinds]
    if qtype == "name":
        specs = [QuerySpec("name", target)]
    elif qtype in ("use", "property"):
        facts = cat.uses if qtype == "use" else cat.properties
        nouns_for = nouns if qtype == "property" else [None]
        specs = [QuerySpec(qtype, target, fact=f, noun_kind=n) for f in facts for n in nouns_for]
    elif qtype == "kind":
        specs = [QuerySpec("kind", target, noun_kind=k) for k in cat.kinds]
    elif qtype == "size":
        specs = [QuerySpec("size", target, noun_kind=k, direction=d) for k in cat.kinds for d in SIZE_WORDS]
    elif qtype == "spatial":
        specs = [
            QuerySpec("spatial", target, noun_kind=n, relation=r, reference=o.category)
            for o in objects
            if o.category != target
            for r in RELATIONS
            for n in nouns
        ]
    else:
        raise ValueError(f"unknown query type {qtype!r}")
    return [s for s in specs if is_valid(s, objects, kb)]


def pick_template(rng: np.random.Generator, options: Sequence, held_out: int, test: bool):
    """(index, item): train/val never see the last `held_out` options; test takes one of them with
    TEST_HELD_OUT_PROBABILITY, else one of the open ones."""
    n_open = len(options) - held_out if held_out and len(options) > held_out else len(options)
    if test and n_open < len(options) and rng.random() < TEST_HELD_OUT_PROBABILITY:
        i = int(rng.integers(n_open, len(options)))
    else:
        i = int(rng.integers(n_open))
    return i, options[i]


def render_query(spec: QuerySpec, kb: Knowledge, rng: np.random.Generator, test: bool) -> Query:
    """Words for a spec: a template (held-out ones only for test) and a fact phrasing."""
    t_index, (template, is_sentence) = pick_template(rng, TEMPLATES[spec.type], HELD_OUT_TEMPLATES, test)
    noun = kb.kinds[spec.noun_kind] if spec.noun_kind else None
    fields = {
        "name": kb.category(spec.target).name,
        "is": "are" if kb.category(spec.target).plural else "is",
        "noun": noun.noun if noun else "object",
        "plural": noun.plural if noun else "objects",
    }
    phrasing = None
    if spec.type in ("use", "property"):
        phrasing, words = pick_template(rng, kb.facts[spec.fact].phrasings, 1, test)
        fields["use" if spec.type == "use" else "prop"] = words
    elif spec.type == "spatial":
        fields["rel"] = RELATIONS[spec.relation]
        fields["ref"] = kb.category(spec.reference).name
    elif spec.type == "size":
        phrasing, (fields["sup"], fields["cmp"]) = pick_template(rng, SIZE_WORDS[spec.direction], 1, test)
    return Query(spec, template.format(**fields), is_sentence, t_index, phrasing)


def explanation(query: Query, kb: Knowledge) -> str:
    """One sentence saying why the target answers the query (the keyword file's `outputs`)."""
    spec, name = query.spec, kb.category(query.spec.target).name
    noun = kb.kinds[spec.noun_kind].noun if spec.noun_kind else "object"
    if spec.type in ("use", "property"):
        words = kb.facts[spec.fact].phrasings[query.phrasing or 0]
        what = f"object used for {words}" if spec.type == "use" else f"{noun} that {words}"
        return f"The {what} is the {name}."
    if spec.type == "kind":
        return f"The only {noun} in the picture is the {name}."
    if spec.type == "spatial":
        return f"The {noun} {RELATIONS[spec.relation]} the {kb.category(spec.reference).name} is the {name}."
    if spec.type == "size":
        return f"The {SIZE_WORDS[spec.direction][query.phrasing or 0][0]} {noun} in the picture is the {name}."
    return f"The picture shows the {name}."


def _weighted_type(rng: np.random.Generator, weights: dict[str, float], allowed: set[str]) -> str | None:
    names = [t for t in QUERY_TYPES if t in allowed and weights.get(t, 0) > 0]
    if not names:
        return None
    w = np.array([weights[t] for t in names], dtype=float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def make_queries(
    objects: Sequence[ObjectInfo],
    kb: Knowledge,
    rng: np.random.Generator,
    *,
    test: bool,
    weights: dict[str, float] | None = None,
    n: int = 3,
    targets: Sequence[str] | None = None,
) -> list[Query]:
    """n distinct phrasings that all refer to one target; the first one's type follows `weights`
    (a type no object can support is dropped and the draw repeated; name always works).
    `targets` restricts which objects may be the target."""
    weights = weights or DEFAULT_WEIGHTS
    pool = [o.category for o in objects if targets is None or o.category in targets]
    if not pool:
        raise ValueError("no object may be the target")
    allowed = set(QUERY_TYPES)
    first_type = None
    while first_type is None:
        qtype = _weighted_type(rng, weights, allowed)
        if qtype is None:  # weights exclude every type that works here: fall back to names
            qtype = "name"
        order = [pool[i] for i in rng.permutation(len(pool))]
        for target in order:
            specs = candidate_specs(qtype, target, objects, kb)
            if specs:
                first_type, first = qtype, specs[int(rng.integers(len(specs)))]
                break
        allowed.discard(qtype)
    target = first.target
    by_type = {t: candidate_specs(t, target, objects, kb) for t in QUERY_TYPES if t != first_type}
    by_type[first_type] = candidate_specs(first_type, target, objects, kb)
    queries = [render_query(first, kb, rng, test)]
    texts = {queries[0].text}
    usable = {t for t, s in by_type.items() if s}
    for _ in range(50 * n):
        if len(queries) == n:
            break
        qtype = _weighted_type(rng, weights, usable) or "name"
        spec = by_type[qtype][int(rng.integers(len(by_type[qtype])))]
        query = render_query(spec, kb, rng, test)
        if query.text not in texts:
            queries.append(query)
            texts.add(query.text)
    if len(queries) < n:
        raise RuntimeError(f"could not word {n} distinct queries for {target}")
    for q in queries:  # the same rule the tests apply; never skipped (not an assert)
        if not is_valid(q.spec, objects, kb):
            raise RuntimeError(f"query {q.text!r} does not single out {target}")
    return queries
