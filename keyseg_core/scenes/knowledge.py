"""The commonsense table behind the queries (knowledge.yaml): loaded once and validated, so a typo
in a fact or a category fails loudly with the key that holds it instead of producing wrong labels."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).with_name("knowledge.yaml")
FACT_TYPES = ("use", "property")


class KnowledgeError(ValueError):
    """knowledge.yaml is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Fact:
    """One fact (a use or a property) and who has it.

    members can be its target; `also` are categories for which it is arguably true as well: their
    presence in a scene blocks the fact, but they are never its target.
    """

    id: str
    type: str  # "use" | "property"
    phrasings: tuple[str, ...]  # the last one is reserved for the test split
    members: frozenset[str]
    also: frozenset[str]

    def holds(self, category: str) -> bool:
        """True when the fact may describe `category` (member or also): the uniqueness rule."""
        return category in self.members or category in self.also

    @property
    def open_phrasings(self) -> tuple[str, ...]:
        """Phrasings every split may use."""
        return self.phrasings[:-1]

    @property
    def held_out(self) -> str:
        """The phrasing only the test split uses."""
        return self.phrasings[-1]


@dataclass(frozen=True)
class Kind:
    id: str
    noun: str
    plural: str


@dataclass(frozen=True)
class Category:
    keyword: str
    name: str  # how text writes it
    codepoint: int
    kinds: tuple[str, ...]
    uses: tuple[str, ...]  # fact ids
    properties: tuple[str, ...]
    plural: bool = False  # a plural noun (glasses, scissors): "Where are the glasses?"


@dataclass(frozen=True)
class Knowledge:
    categories: dict[str, Category]
    kinds: dict[str, Kind]
    facts: dict[str, Fact]
    conflicts: frozenset[frozenset[str]] = frozenset()  # pairs that never share a scene

    def compatible(self, category: str, others: "list[str] | tuple[str, ...]") -> bool:
        """False when `category` conflicts with one of `others` (one glyph draws the other)."""
        return not any(frozenset((category, o)) in self.conflicts for o in others)

    def category(self, keyword: str) -> Category:
        return self.categories[keyword]

    def facts_of(self, keyword: str, fact_type: str) -> tuple[Fact, ...]:
        cat = self.categories[keyword]
        ids = cat.uses if fact_type == "use" else cat.properties
        return tuple(self.facts[i] for i in ids)

    def has_kind(self, keyword: str, kind: str) -> bool:
        return kind in self.categories[keyword].kinds

    @property
    def n_facts(self) -> int:
        return len(self.facts)


def _fail(path: Path, key: str, detail: str) -> KnowledgeError:
    return KnowledgeError(f"{path}: {key}: {detail}")


def _phrasings(raw: Any, path: Path, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not 2 <= len(raw) <= 4:
        raise _fail(path, key, "a fact needs a list of 2-4 phrasings")
    out = []
    for i, p in enumerate(raw):
        if not isinstance(p, str) or not p.strip() or p != p.strip():
            raise _fail(path, f"{key}[{i}]", f"phrasing must be a non-empty trimmed string, got {p!r}")
        out.append(p)
    if len(set(out)) != len(out):
        raise _fail(path, key, "repeated phrasing")
    return tuple(out)


def _fact_body(raw: Any, path: Path, key: str) -> tuple[tuple[str, ...], list[str]]:
    """A fact is a list of phrasings or {say: [...], also: [...]}."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"say", "also"}
        if unknown:
            raise _fail(path, key, f"unknown field(s) {sorted(unknown)}; expected say, also")
        also = raw.get("also") or []
        if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
            raise _fail(path, f"{key}.also", "must be a list of category keywords")
        return _phrasings(raw.get("say"), path, f"{key}.say"), list(also)
    return _phrasings(raw, path, key), []


def _codepoint(raw: Any, path: Path, key: str) -> int:
    text = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    try:
        value = int(text, 16)
    except ValueError:
        raise _fail(path, key, f"codepoint must be hex digits like 1F6CF, got {raw!r}") from None
    if not 0x20 <= value <= 0x10FFFF:
        raise _fail(path, key, f"codepoint {text} is out of range")
    return value


def parse_knowledge(data: Any, path: Path = DEFAULT_PATH) -> Knowledge:
    """Validate the YAML structure and resolve shared facts; every error names its key."""
    if not isinstance(data, dict):
        raise _fail(path, "-", "top level must be a mapping")
    for section in ("kinds", "categories"):
        if not isinstance(data.get(section), dict) or not data[section]:
            raise _fail(path, section, "missing or empty mapping")
    kinds: dict[str, Kind] = {}
    for kid, body in data["kinds"].items():
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) and body[f] for f in ("noun", "plural")):
            raise _fail(path, f"kinds.{kid}", "needs string fields noun and plural")
        kinds[str(kid)] = Kind(str(kid), body["noun"], body["plural"])

    # fact id -> (type, phrasings, also, key)
    shared: dict[str, tuple[str, tuple[str, ...], list[str], str]] = {}
    for fact_type in FACT_TYPES:
        section = f"shared_{fact_type}s" if fact_type == "use" else "shared_properties"
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise _fail(path, section, "must be a mapping of fact id -> fact")
        for name, raw in entries.items():
            key = f"{section}.{name}"
            shared[f"{fact_type}:{name}"] = (fact_type, *_fact_body(raw, path, key), key)

    members: dict[str, set[str]] = {}
    bodies: dict[str, tuple[str, tuple[str, ...], list[str], str]] = {}
    categories: dict[str, Category] = {}
    for keyword, body in data["categories"].items():
        ckey = f"categories.{keyword}"
        if not isinstance(keyword, str) or keyword != keyword.strip().lower() or not keyword:
            raise _fail(path, ckey, "keyword must be a lower-case trimmed string")
        if not isinstance(body, dict):
            raise _fail(path, ckey, "must be a mapping")
        unknown = set(body) - {"codepoint", "kinds", "uses", "properties", "name", "plural"}
        if unknown:
            raise _fail(path, ckey, f"unknown field(s) {sorted(unknown)}")
        cat_kinds = body.get("kinds")
        if not isinstance(cat_kinds, list) or not cat_kinds:
            raise _fail(path, f"{ckey}.kinds", "needs a non-empty list of kinds")
        for k in cat_kinds:
            if k not in kinds:
                raise _fail(path, f"{ckey}.kinds", f"unknown kind {k!r}; known: {', '.join(kinds)}")
        ids: dict[str, list[str]] = {}
        for fact_type in FACT_TYPES:
            field = "uses" if fact_type == "use" else "properties"
            raw_list = body.get(field)
            if not isinstance(raw_list, list) or not raw_list:
                raise _fail(path, f"{ckey}.{field}", "needs a non-empty list of facts")
            ids[field] = []
            for i, raw in enumerate(raw_list):
                key = f"{ckey}.{field}[{i}]"
                if isinstance(raw, str):
                    fid = f"{fact_type}:{raw}"
                    if fid not in shared:
                        raise _fail(path, key, f"unknown shared {fact_type} {raw!r}")
                    bodies[fid] = shared[fid]
                else:
                    fid = f"{keyword}:{fact_type}:{i}"
                    bodies[fid] = (fact_type, *_fact_body(raw, path, key), key)
                if fid in ids[field]:
                    raise _fail(path, key, "fact listed twice")
                ids[field].append(fid)
                members.setdefault(fid, set()).add(keyword)
        name = body.get("name", keyword)
        if not isinstance(name, str) or not name.strip():
            raise _fail(path, f"{ckey}.name", "must be a non-empty string")
        if not isinstance(body.get("plural", False), bool):
            raise _fail(path, f"{ckey}.plural", "must be true or false")
        categories[keyword] = Category(
            keyword=keyword,
            name=name,
            codepoint=_codepoint(body.get("codepoint"), path, f"{ckey}.codepoint"),
            kinds=tuple(cat_kinds),
            uses=tuple(ids["uses"]),
            properties=tuple(ids["properties"]),
            plural=body.get("plural", False),
        )

    unused = sorted(set(shared) - set(bodies))
    if unused:
        raise _fail(path, shared[unused[0]][3], "shared fact is not used by any category")
    facts: dict[str, Fact] = {}
    owner: dict[tuple[str, str], str] = {}  # (type, phrasing) -> key, so wording never silently shares
    for fid, (fact_type, phrasings, also, key) in bodies.items():
        for a in also:
            if a not in categories:
                raise _fail(path, f"{key}.also", f"unknown category {a!r}")
            if a in members[fid]:
                raise _fail(path, f"{key}.also", f"{a!r} already has this fact")
        for p in phrasings:
            previous = owner.setdefault((fact_type, p), key)
            if previous != key:
                raise _fail(path, key, f"phrasing {p!r} also appears in {previous}; share the fact instead")
        facts[fid] = Fact(fid, fact_type, phrasings, frozenset(members[fid]), frozenset(also))
    conflicts = set()
    raw_conflicts = data.get("conflicts") or []
    if not isinstance(raw_conflicts, list):
        raise _fail(path, "conflicts", "must be a list of category pairs")
    for i, pair in enumerate(raw_conflicts):
        if not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1]:
            raise _fail(path, f"conflicts[{i}]", "must be a pair of two different categories")
        for c in pair:
            if c not in categories:
                raise _fail(path, f"conflicts[{i}]", f"unknown category {c!r}")
        conflicts.add(frozenset(pair))
    return Knowledge(categories=categories, kinds=kinds, facts=facts, conflicts=frozenset(conflicts))


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """The validated table; the bundled one is parsed once per process."""
    if path is None:
        return _default()
    return _load(Path(path))


def _load(path: Path) -> Knowledge:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"{path}: invalid YAML: {exc}") from exc
    return parse_knowledge(data, path)


@lru_cache(maxsize=1)
def _default() -> Knowledge:
    return _load(DEFAULT_PATH)
