"""What users ask a KeySeg robot, as text a speech recogniser can be biased toward.

A `QueryVocabulary` is a list of query phrasings (templates with `{keyword}` and `{other}` slots,
or plain sentences) plus the model's keyword list. `corpus()` expands it into sentences; the
pocketsphinx recogniser builds a small trigram language model from them, so "which object in
this room is used for sleeping" is heard as that and not as "we are in the group is used for
sleeping".

The default is built from `keyseg_core.config.default_keywords.COCO_CATEGORIES` and the generic phrasings
below. Point it at a scene generator's or a trained model's own table with
`QueryVocabulary.from_file(path)` (YAML/JSON with `phrases` and `keywords`, or a text file with
one phrase per line) or `QueryVocabulary(phrases, keywords)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from keyseg_core.config.default_keywords import COCO_CATEGORIES

# Generic ways to ask for an object. {keyword} is every keyword in turn; {other} a few others.
TEMPLATES = (
    "{keyword}", "the {keyword}", "a {keyword}", "the {keyword} please",
    "where is the {keyword}", "where are the {keyword}", "find the {keyword}", "segment the {keyword}",
    "show me the {keyword}", "point to the {keyword}", "pick up the {keyword}", "bring me the {keyword}",
    "give me the {keyword}", "look at the {keyword}", "can you find the {keyword}",
    "which one is the {keyword}", "is there a {keyword}", "the {keyword} on the {other}",
    "the {keyword} next to the {other}", "the {keyword} near the {other}",
    "the {keyword} in the {other}", "the {keyword} by the {other}", "the {keyword} under the {other}",
    "the {keyword} behind the {other}", "the {keyword} on the left", "the {keyword} on the right",
    "the big {keyword}", "the small {keyword}", "the red {keyword}", "the blue {keyword}",
    "the white {keyword}", "the black {keyword}", "the green {keyword}",
    "where did I leave my {keyword}", "the {keyword} I can use",
)
# Reasoning queries name a purpose instead of the object.
PURPOSE_TEMPLATES = (
    "which object is used for {purpose}", "which object in this room is used for {purpose}",
    "what can I use for {purpose}", "something for {purpose}", "the thing used for {purpose}",
    "which object would you use for {purpose}",
)
PURPOSES = (
    "sleeping", "sitting", "eating", "drinking", "cooking", "cutting", "cutting paper", "reading",
    "writing", "cleaning", "washing", "brushing teeth", "playing", "working", "typing", "storing food",
    "heating food", "keeping food cold", "telling the time", "watching television", "carrying things",
    "holding flowers", "calling someone", "riding", "drying hair",
)
ACTION_TEMPLATES = (
    "what can I use to {action}", "something I can use to {action}", "which object can I {action} with",
    "the thing I use to {action}", "something to {action}", "which object lets me {action}",
)
ACTIONS = (
    "sleep", "sit on", "eat", "drink from", "cook", "cut things", "cut paper", "read", "write",
    "clean", "wash my hands", "brush my teeth", "play", "work", "type", "heat food", "keep food cold",
    "tell the time", "watch a movie", "carry things", "call someone", "ride", "dry my hair",
)
OTHERS_PER_KEYWORD = 3


def normalize(text: str) -> str:
    """Lower case words, no punctuation (apostrophes kept): how transcripts are compared."""
    text = text.lower().replace("-", " ").replace("_", " ")
    return " ".join(re.findall(r"[a-z0-9']+", text))


@dataclass
class QueryVocabulary:
    """Query phrasings and keywords a recogniser is biased toward."""

    phrases: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)

    @classmethod
    def default(cls) -> QueryVocabulary:
        phrases = list(TEMPLATES)
        phrases += [t.format(purpose=p) for t in PURPOSE_TEMPLATES for p in PURPOSES]
        phrases += [t.format(action=a) for t in ACTION_TEMPLATES for a in ACTIONS]
        return cls(phrases, list(COCO_CATEGORIES))

    @classmethod
    def from_file(cls, path: str | Path) -> QueryVocabulary:
        """YAML or JSON `{phrases: [...], keywords: [...]}` (either may be missing: the defaults'
        are used), or a text file with one phrase per line (keywords: the default list)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        default = cls.default()
        if path.suffix in (".yaml", ".yml", ".json"):
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
            if not isinstance(data, dict) or not ({"phrases", "keywords"} & set(data)):
                raise ValueError(f"{path}: expected a mapping with 'phrases' and/or 'keywords'")
            return cls(_strings(data.get("phrases"), path, "phrases") or default.phrases,
                       _strings(data.get("keywords"), path, "keywords") or default.keywords)
        phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return cls(phrases, default.keywords)

    def corpus(self) -> list[str]:
        """Every phrasing with its slots filled, normalised, without duplicates (stable order)."""
        keywords = [normalize(k) for k in self.keywords if normalize(k)]
        sentences: dict[str, None] = {}
        for k in keywords:
            sentences[k] = None
        for phrase in self.phrases:
            if "{keyword}" not in phrase and "{other}" not in phrase:
                sentences[normalize(phrase)] = None
                continue
            for i, keyword in enumerate(keywords):
                others = [keywords[(i + j * 7 + 1) % len(keywords)] for j in range(OTHERS_PER_KEYWORD)] \
                    if "{other}" in phrase else [""]
                for other in others:
                    sentences[normalize(phrase.replace("{keyword}", keyword).replace("{other}", other))] = None
        sentences.pop("", None)
        return list(sentences)

    def words(self) -> set[str]:
        return {w for sentence in self.corpus() for w in sentence.split()}

    def keywords_in(self, text: str) -> list[str]:
        """The keywords (whole words, longest first) that occur in `text`."""
        padded = f" {normalize(text)} "
        found = []
        for keyword in sorted({normalize(k) for k in self.keywords}, key=len, reverse=True):
            if keyword and f" {keyword} " in padded:
                found.append(keyword)
                padded = padded.replace(f" {keyword} ", " | ")
        return found


def _strings(value, path: Path, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: '{key}' must be a list of strings")
    return list(value)


def read_dictionary_words(path: str | Path) -> set[str]:
    """The words of a CMU-style pronunciation dictionary (alternates like `read(2)` folded)."""
    words = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            word = line.split(" ", 1)[0]
            if word:
                words.add(word.split("(", 1)[0])
    return words


def arpa_language_model(sentences: Iterable[str], discount_mass: float = 0.5) -> str:
    """A trigram ARPA language model of `sentences` (with <s> and </s>), built with the
    builder that ships in the pocketsphinx wheel."""
    import io

    from pocketsphinx.lm import ArpaBoLM

    lm = ArpaBoLM(text="\n".join(sentences), add_start=True, discount_mass=discount_mass)
    lm.compute()
    out = io.StringIO()
    lm.write(out)
    return out.getvalue()
