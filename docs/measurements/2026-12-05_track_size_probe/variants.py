"""Tracker variants on cached model masks (cache.py, seed 500 sequences): id switches per (speed, stride).
size "last" + alpha 1.0 is the tracker before this change; "max" + alpha 0.5 the one taken.
Usage: python variants.py model500.pkl 500"""
import pickle, sys, itertools
import numpy as np
import keyseg_core.inference.tracking as T
from keyseg_core.inference.instances import split_instances
from keyseg_core.eval.tracking import target_id, id_switches
from keyseg_core.scenes import generate_sequence

class V(T.MaskTracker):
    def __init__(self, size_mode="last", vel_alpha=1.0, **kw):
        super().__init__(**kw); self.size_mode = size_mode; self.vel_alpha = vel_alpha
    def update(self, masks, labels=None):
        labels = list(labels) if labels is not None else [None] * len(masks)
        centres = [T._centroid(m) for m in masks]
        pairs = []
        for ti, t in enumerate(self._tracks):
            for mi, m in enumerate(masks):
                iou = self._overlap(t, m)
                if iou > self.iou_threshold:
                    pairs.append((1, iou, ti, mi)); continue
                if labels[mi] != t.label or not m.any(): continue
                area = np.count_nonzero(m)
                own = t.size if self.size_mode == "max" else np.count_nonzero(t.mask)
                exp = t.centre + t.velocity * (t.missed + 1)
                d = float(np.linalg.norm(centres[mi] - exp) / np.sqrt(max(area, own)))
                if self.gate and d <= self.gate:
                    pairs.append((0, -d, ti, mi))
        ids = [None] * len(masks); matched = set()
        for _, _, ti, mi in sorted(pairs, reverse=True):
            if ti in matched or ids[mi] is not None: continue
            matched.add(ti); t = self._tracks[ti]
            v = (centres[mi] - t.centre) / (t.missed + 1)
            t.velocity = self.vel_alpha * v + (1 - self.vel_alpha) * t.velocity
            t.mask, t.centre, t.missed, ids[mi] = masks[mi], centres[mi], 0, t.id
            t.label = labels[mi]; t.size = max(t.size, int(np.count_nonzero(masks[mi])))
        kept = []
        for ti, t in enumerate(self._tracks):
            if ti not in matched: t.missed += 1
            if t.missed < self.lost_frames: kept.append(t)
        for mi, m in enumerate(masks):
            if ids[mi] is None:
                ids[mi] = str(next(self._ids))
                t = T._Track(ids[mi], m, centres[mi], np.zeros(2), labels[mi]); t.size = int(np.count_nonzero(m))
                kept.append(t)
        self._tracks = kept
        return ids

def run(data, seed, make, truth_cache):
    out = []
    for key, rows in sorted(data.items()):
        sw = 0
        for s, d in enumerate(rows):
            truths = truth_cache[(key, s)]
            tr = make(); ids = []
            for pm, k, g in zip(d["masks"], d["kw"], truths):
                m = np.unpackbits(pm)[: np.prod(d["shape"])].reshape(d["shape"]).astype(bool)
                inst = split_instances(m, "mask", min_area=20)
                ids.append(target_id(inst, tr.update(inst, [k] * len(inst)), g))
            sw += id_switches(ids)
        out.append(sw)
    return out

if __name__ == "__main__":
    data = pickle.load(open(sys.argv[1], "rb")); seed = int(sys.argv[2])
    truth_cache = {}
    for (speed, stride), rows in data.items():
        for s in range(len(rows)):
            seq = generate_sequence(60 * stride, seed=seed + s, speed=speed)
            truth_cache[((speed, stride), s)] = [t.astype(bool) for t in seq.masks[::stride]]
    print("keys", sorted(data))
    for lost in (10, 30, 1000):
        for size_mode, alpha, gate in itertools.product(("last", "max"), (1.0, 0.5), (2.0, 3.0, 4.0)):
            r = run(data, seed, lambda: V(size_mode, alpha, iou_threshold=0.1, lost_frames=lost, gate=gate), truth_cache)
            print(f"lost {lost} size {size_mode} alpha {alpha} gate {gate}: {r} sum {sum(r)}", flush=True)
