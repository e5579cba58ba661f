"""One query's score: the first answered frame's keyword against the scene's, its mask's IoU with
the true target, and the latency over every answered frame."""

from __future__ import annotations

import numpy as np

from keyseg_ros.tools.demo.collector import Collector
from keyseg_ros.tools.demo.scenes import Item


def mask_of(msg) -> np.ndarray:
    """HxW bool from a mono8 sensor_msgs/Image (any row padding)."""
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width] > 0


def score(item: Item, collector: Collector | None = None) -> dict:
    """One summary row: the first answered frame's keyword and IoU, latency over all answered frames;
    with the collector, whether the `mask` topic carried the same mask for that frame."""
    from keyseg_core.eval.metrics import mask_iou

    if not item.results:
        return {"published_keyword": "", "present": True, "correct": False, "iou": 0.0, "latency_ms": float("nan")}
    arrival, first = item.results[0]
    latencies = [(t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) * 1e3 for t, m in item.results]
    predicted = mask_of(first.mask)
    timings = {t.stage: t.ms for t in first.timings}
    return {
        "index": item.index,
        "query_type": item.qtype,
        "query": item.query,
        "expected_keyword": item.expected,
        "published_keyword": first.keyword,
        "present": bool(first.present),
        "keyword_prob": round(float(first.keyword_prob), 4),
        "correct": first.keyword.strip().lower() == item.expected.lower(),
        "iou": round(float(mask_iou(predicted, item.target)), 4),
        "latency_ms": round(float(np.median(latencies)), 1),
        "latencies_ms": [round(v, 1) for v in latencies],
        "model_ms": round(float(timings.get("total", float("nan"))), 1),
        "first_answer_s": round(arrival - item.query_sent, 3),
        "answers": len(item.results),
        "keyword_topk": [[c.text, round(float(c.prob), 4)] for c in first.keyword_topk],
        "answer": first.answer,
        "confidence": round(float(first.confidence), 4),
        "mask_pixels": int(predicted.sum()),
        "target_pixels": int(item.target.sum()),
        "sample_index": item.sample,
        "background": item.background,
        "frame_id": item.frame_id,
        "scene": str(item.scene_path),
        "mask_topic_agrees": None if collector is None else collector.mask_agrees(first),
    }


def shown(row: dict) -> str:
    """What the node published for a row, as a person reads it: the keyword, "not here", or "(none)"."""
    if not row.get("present", True):
        return "not here"
    return row["published_keyword"] or "(none)"
