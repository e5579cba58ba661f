"""LISA's question and answer lists, so training data can be phrased exactly as LISA trained.

LISA wraps each item's text in a randomly chosen question: semantic classes and referring sentences
use the short list (with the lower-cased name or sentence), ReasonSeg uses the long list for full
sentences and the short list for noun phrases; the answer is a random item of the answer list. The
`<image>\\n` prefix LISA writes before each question is the model's `template.prompt` here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SHORT_QUESTIONS = (
    "Can you segment the {class_name} in this image?",
    "Please segment the {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS = (
    "{sent} Please respond with segmentation mask.",
    "{sent} Please output segmentation mask.",
)
ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)

DataKind = Literal["semantic", "referring", "reasoning"]
# reader name -> the kind of text its queries are
KIND_OF_READER: dict[str, DataKind] = {
    "coco": "semantic", "refcoco": "referring", "refcoco+": "referring", "refcocog": "referring",
    "reasonseg": "reasoning",
}


def lisa_question(kind: DataKind, text: str, is_sentence: bool, rng: np.random.Generator) -> str:
    """The query LISA would ask for `text`: long list for reasoning sentences, else the short list."""
    text = text.strip()
    if kind == "reasoning" and is_sentence:
        return LONG_QUESTIONS[int(rng.integers(len(LONG_QUESTIONS)))].format(sent=text)
    return SHORT_QUESTIONS[int(rng.integers(len(SHORT_QUESTIONS)))].format(class_name=text.lower())


def lisa_answer(rng: np.random.Generator) -> str:
    """One of LISA's answers, with the leading space the model's answer templates carry."""
    return " " + ANSWERS[int(rng.integers(len(ANSWERS)))]
