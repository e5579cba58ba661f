"""`python -m keyseg_core.eval.tracking`: id switches of `MaskTracker` on generated moving scenes.

Each sequence (keyseg_core.scenes.video) has one target that drifts and scales over a background;
its true mask is known on every frame. The masks fed to the tracker come from
  truth   the true masks, each randomly eroded or dilated by up to 2 px, with a few frames
          dropped (empty), as a segmenter's jitter and misses would look;
  model   a predictor streaming the sequence (one reasoning pass, SAM on every frame), as the
          ROS node runs it.
On each frame the target's id is the id of the instance that overlaps the true mask best; an id
switch is a change of that id between two frames where the target was found. Switches that follow
`lost_frames` or more fed frames without the target are counted apart as well: there a new id is
the tracker's contract (the target was lost), not a tracking error. `stride` feeds every
n-th frame only (a node that skips frames sees n times the motion). The model's instances carry its
keyword as their label, as the node's do (the tracker's position gate joins same-label masks only).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from keyseg_core.atomic import save_report
from keyseg_core.inference.instances import split_instances
from keyseg_core.inference.refine import REFINE_METHODS
from keyseg_core.inference.tracking import MaskTracker, mask_iou


@dataclass
class TrackingResult:
    source: str
    speed: float
    stride: int
    sequences: int
    frames: int  # frames fed to the tracker, all sequences
    found: int  # frames where an instance overlapped the true target
    id_switches: int
    after_loss: int  # of id_switches, those after >= lost_frames fed frames without the target
    ids_started: int  # distinct ids given to the target, all sequences (one per sequence is ideal)


def id_switches(ids: list[str | None]) -> int:
    """Changes of id between consecutive frames where the target had one (None: not found)."""
    seen = [i for i in ids if i is not None]
    return sum(a != b for a, b in zip(seen, seen[1:]))


def switches_after_loss(ids: list[str | None], lost_frames: int) -> int:
    """Id changes whose two found frames lie more than `lost_frames` fed frames apart (the target was
    missing for at least `lost_frames` frames in between)."""
    found = [(t, i) for t, i in enumerate(ids) if i is not None]
    return sum(a != b and u - t > lost_frames for (t, a), (u, b) in zip(found, found[1:]))


def target_id(instances: list[np.ndarray], ids: list[str], truth: np.ndarray) -> str | None:
    """The id of the instance overlapping the true mask best; None when none overlaps it."""
    best, best_iou = None, 0.0
    for mask, track_id in zip(instances, ids):
        iou = mask_iou(mask, truth)
        if iou > best_iou:
            best, best_iou = track_id, iou
    return best


def jitter(mask: np.ndarray, rng: np.random.Generator, drop: float) -> np.ndarray:
    """The true mask eroded or dilated by 0-2 px, or empty with probability `drop`."""
    if rng.random() < drop:
        return np.zeros_like(mask, dtype=bool)
    radius = int(rng.integers(-2, 3))
    if radius == 0:
        return mask.astype(bool)
    kernel = np.ones((2 * abs(radius) + 1,) * 2, np.uint8)
    op = cv2.dilate if radius > 0 else cv2.erode
    return op(mask.astype(np.uint8), kernel).astype(bool)


def evaluate(source: str, *, sequences: int, frames: int, speed: float, stride: int, seed: int,
             iou_threshold: float, lost_frames: int, predictor=None, drop: float = 0.05,
             instance_mode: str = "mask", gate: float = 4.0) -> TrackingResult:
    from keyseg_core.scenes import generate_sequence

    switches = after_loss = found = fed = started = 0
    for s in range(sequences):
        seq = generate_sequence(frames * stride, seed=seed + s, speed=speed)
        tracker = MaskTracker(iou_threshold, lost_frames, gate)
        rng = np.random.default_rng(seed + s)
        answers = _model_masks(predictor, seq, stride) if source == "model" else \
            [(jitter(m, rng, drop), None) for m in seq.masks[::stride]]
        ids = []
        for (mask, label), truth in zip(answers, seq.masks[::stride]):
            instances = split_instances(mask, instance_mode, min_area=20)
            track_ids = tracker.update(instances, [label] * len(instances))
            ids.append(target_id(instances, track_ids, truth.astype(bool)))
        fed += len(ids)
        found += sum(i is not None for i in ids)
        switches += id_switches(ids)
        after_loss += switches_after_loss(ids, lost_frames)
        started += len({i for i in ids if i is not None})
    return TrackingResult(source, speed, stride, sequences, fed, found, switches, after_loss, started)


def _model_masks(predictor, seq, stride: int) -> list[tuple[np.ndarray, str | None]]:
    """(mask, keyword) of each fed frame, streamed as the node streams."""
    from keyseg_core.inference.stream import StreamingSegmenter

    stream = StreamingSegmenter(predictor)
    stream.set_query(seq.texts[0])
    answers = []
    for t, frame in enumerate(seq.frames[::stride]):
        prediction = stream.step(frame, now=t / 30.0).prediction
        answers.append((prediction.mask, prediction.keyword))
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyseg_core.eval.tracking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--frames", type=int, default=60, help="frames fed per sequence")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--speeds", default="2,6", help="fastest drift, px/frame at 320x240 (comma list)")
    parser.add_argument("--strides", default="1,3", help="feed every n-th frame (comma list)")
    parser.add_argument("--iou-threshold", type=float, default=0.1)
    parser.add_argument("--lost-frames", type=int, default=30)
    parser.add_argument("--gate", type=float, default=4.0,
                        help="position gate in object sizes for masks that no longer overlap (0: IoU only)")
    parser.add_argument("--model", nargs="?", const="", default=None,
                        help="also run a predictor (no value: the shipped model)")
    parser.add_argument("--refine", choices=REFINE_METHODS, default="grabcut", help="the model's mask refinement")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    predictor = None
    if opts.model is not None:
        from keyseg_core.runtime.predictor import Predictor

        predictor = Predictor.from_pretrained(opts.model or None, refine=opts.refine)
    rows = []
    sources = ["truth"] + (["model"] if predictor is not None else [])
    for source in sources:
        for speed in (float(v) for v in opts.speeds.split(",")):
            for stride in (int(v) for v in opts.strides.split(",")):
                start = time.perf_counter()
                rows.append(evaluate(source, sequences=opts.sequences, frames=opts.frames, speed=speed,
                                     stride=stride, seed=opts.seed, iou_threshold=opts.iou_threshold,
                                     lost_frames=opts.lost_frames, predictor=predictor, gate=opts.gate))
                print(f"{source} speed {speed:g} stride {stride}: {time.perf_counter() - start:.1f} s", flush=True)
    print("| masks | drift px/frame | stride | sequences | frames | target found | id switches "
          f"(after a loss of >= {opts.lost_frames} frames) | ids per sequence |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.source} | {r.speed:g} | {r.stride} | {r.sequences} | {r.frames} | "
              f"{r.found / max(r.frames, 1):.1%} | {r.id_switches} ({r.after_loss}) | "
              f"{r.ids_started / max(r.sequences, 1):.2f} |")
    save_report(opts.json, [asdict(r) for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
