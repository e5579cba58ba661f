"""The one item type every reader returns, so training can mix data sets freely."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SegSample:
    """One image with one target mask and the queries that describe it.

    image: HxWx3 uint8 RGB at the original resolution.
    mask:  HxW uint8; 1 = target, 0 = background, IGNORE_PIXEL (255) = ignore, in neither loss nor metrics.
    queries: every phrasing of the request for this mask (ReasonSeg: 1-5 paraphrases; refer data:
        one sentence, or all sentences of a ref with unit="ref"; COCO: the category name).
        Evaluation uses queries[0].
    keyword: the target concept for the [KEY] token (Reason-Seg-Key, COCO category), or None.
    query_type: what kind of reasoning queries[0] asks for, where the data says (generated scenes:
        name, use, property, kind, spatial, size); evaluation reports each type separately.
    """

    id: str
    source: str
    image: np.ndarray
    mask: np.ndarray
    queries: list[str]
    is_sentence: bool
    keyword: str | None = None
    explanation: str | None = None
    image_path: str | None = None
    annotation_path: str | None = None
    query_type: str | None = None
