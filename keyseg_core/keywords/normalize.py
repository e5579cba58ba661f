"""Keyword normalisation (paper sec. 4.2): one representative lowercase form per concept, and
incomplete or redundant extractions dropped with a reason instead of kept as noise."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ARTICLES = {"a", "an", "the"}
# words a complete noun phrase does not start or end with
DANGLING = {"of", "and", "or", "with", "in", "on", "for", "to", "at", "by", "from", "that", "which", "is", "are"}
GENERIC = {"object", "objects", "thing", "things", "item", "items", "something", "it", "this", "that", "none",
           "nothing", "answer", "text", "keyword", "unknown", "n/a", "na", "noun phrase", "word"}
# plural-looking words that are their own singular (or have no useful singular)
INVARIANT = {"glasses", "sunglasses", "eyeglasses", "scissors", "pants", "trousers", "jeans", "shorts", "binoculars",
             "pliers", "tongs", "headphones", "earphones", "goggles", "clothes", "species", "series", "news",
             "means", "chess", "tennis", "physics", "bus", "gas", "lens", "canvas", "atlas", "iris", "cactus",
             "octopus", "walrus", "hippopotamus", "asparagus", "hummus", "bonus", "virus", "campus", "chassis",
             "mattress", "dress", "glass", "grass", "brass", "compass", "cross", "moss", "boss", "bass",
             "stairs", "sheep", "deer", "fish", "aircraft", "police", "cattle", "equipment",
             "furniture", "luggage", "baggage", "this", "christmas"}
IRREGULAR = {"people": "person", "children": "child", "men": "man", "women": "woman", "feet": "foot",
             "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox", "knives": "knife", "wives": "wife",
             "lives": "life", "leaves": "leaf", "loaves": "loaf", "shelves": "shelf", "wolves": "wolf",
             "halves": "half", "calves": "calf", "scarves": "scarf", "thieves": "thief", "potatoes": "potato",
             "tomatoes": "tomato", "heroes": "hero", "echoes": "echo", "mangoes": "mango", "volcanoes": "volcano",
             "mosquitoes": "mosquito", "buses": "bus", "lenses": "lens", "axes": "axe", "dice": "die",
             "cacti": "cactus",
             "fungi": "fungus", "indices": "index", "matrices": "matrix", "vertices": "vertex"}
# words whose plural is just +s although the stem ends like an -es/-ies plural
PLUS_S = {"cookie", "movie", "zombie", "rookie", "calorie", "brownie", "smoothie", "selfie", "goalie", "pie", "tie",
          "lie", "headache", "moustache", "mustache", "niche", "cache", "avalanche", "quiche", "horse", "house",
          "vase", "case", "nose", "rose", "purse", "nurse", "base", "blouse", "spouse", "cheese",
          "tortoise", "suitcase", "bookcase", "staircase", "pulse", "hose", "lighthouse", "warehouse", "greenhouse"}


def clean(text: str) -> str:
    """Lowercase, drop punctuation (keep in-word hyphens/apostrophes), collapse spaces, strip a
    leading article."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^\w\s'\-/]", " ", text)
    text = re.sub(r"(?<!\w)['\-/]|['\-/](?!\w)", " ", text)
    words = text.split()
    while words and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(words)


def singularize_word(word: str) -> str:
    """English plural -> singular by suffix rules plus exception lists; unknown forms pass through."""
    if word in INVARIANT or len(word) <= 3 or not word.isalpha():
        return word
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word.endswith("ies"):
        return word[:-1] if word[:-1] in PLUS_S else word[:-3] + "y"
    if word.endswith("es") and word[:-1] in PLUS_S:
        return word[:-1]
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def singularize(phrase: str) -> str:
    """Singularise the head noun: the word before ' of ' ("bottles of water"), else the last word."""
    words = phrase.split()
    if not words:
        return phrase
    head = words.index("of") - 1 if "of" in words[1:] else len(words) - 1
    words[head] = singularize_word(words[head])
    return " ".join(words)


def load_mapping(path: Path, what: str) -> dict[str, str]:
    """A YAML or JSON object of str -> str; errors name the file and the offending key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"{what} file not found: {path}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot parse {what} file: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} file must be a mapping")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: {what} entry '{key}' must map to a non-empty string, got {value!r}")
    return {str(k): v for k, v in data.items()}


def load_synonyms(path: Path) -> dict[str, str]:
    """variant -> representative form, both cleaned. A representative may not itself be a variant
    (that would make the result depend on lookup order)."""
    synonyms = {}
    for key, value in load_mapping(path, "synonym").items():
        variant, rep = clean(key), clean(value)
        if not variant or not rep:
            raise ValueError(f"{path}: synonym entry '{key}' is empty after cleaning")
        synonyms[variant] = rep
    for variant, rep in synonyms.items():
        if rep in synonyms and synonyms[rep] != rep:
            raise ValueError(
                f"{path}: synonym entry '{variant}' maps to '{rep}', which is itself mapped to '{synonyms[rep]}'"
            )
    return synonyms


@dataclass
class NormalizeConfig:
    """max_words/max_chars: longer outputs are sentences, not keywords, and are dropped."""

    max_words: int = 3
    max_chars: int = 40
    synonyms: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {self.max_chars}")


@dataclass(frozen=True)
class Normalized:
    keyword: str | None  # None when dropped
    dropped: str | None = None  # reason: empty, too_many_words, too_long, incomplete, generic, redundant
    synonym: bool = False  # a synonym-map entry applied


def normalize(answer: str, config: NormalizeConfig) -> Normalized:
    """Parsed model answer -> representative keyword, or a drop reason."""
    phrase = clean(answer)
    synonym = phrase in config.synonyms
    if synonym:
        phrase = config.synonyms[phrase]
    else:
        phrase = singularize(phrase)
        synonym = phrase in config.synonyms
        phrase = config.synonyms.get(phrase, phrase)
    words = phrase.split()
    if not words:
        return Normalized(None, "empty")
    if len(words) > config.max_words:
        return Normalized(None, "too_many_words")
    if len(phrase) > config.max_chars:
        return Normalized(None, "too_long")
    if words[0] in DANGLING or words[-1] in DANGLING:
        return Normalized(None, "incomplete")
    if phrase in GENERIC:
        return Normalized(None, "generic")
    if len(set(words)) < len(words):
        return Normalized(None, "redundant")
    return Normalized(phrase, synonym=synonym)
