"""Each id switch of keyseg_core.inference.tracking.MaskTracker (defaults) on cached model masks: the old track at that moment.
Usage: python diag.py <cache.pkl> <first sequence seed>"""
import pickle, sys
import numpy as np
import keyseg_core.inference.tracking as T
from keyseg_core.inference.instances import split_instances
from keyseg_core.eval.tracking import target_id, id_switches
from keyseg_core.scenes import generate_sequence
seed = int(sys.argv[2])
data = pickle.load(open(sys.argv[1], "rb"))
for (speed, stride), rows in sorted(data.items()):
    total = 0
    for s, d in enumerate(rows):
        seq = generate_sequence(60 * stride, seed=seed + s, speed=speed)
        truths = [t.astype(bool) for t in seq.masks[::stride]]
        tr = T.MaskTracker(); ids = []; prev = None
        for f, (pm, k, g) in enumerate(zip(d["masks"], d["kw"], truths)):
            m = np.unpackbits(pm)[: np.prod(d["shape"])].reshape(d["shape"]).astype(bool)
            inst = split_instances(m, "mask", min_area=20)
            before = {t.id: (t.missed, t.centre.copy(), t.velocity.copy(), int(t.mask.sum()), t.label) for t in tr._tracks}
            tid = target_id(inst, tr.update(inst, [k] * len(inst)), g)
            if tid is not None and prev is not None and tid != prev[0]:
                total += 1
                old = before.get(prev[0])
                cen = T._centroid(m)
                if old:
                    missed, c, v, area, lab = old
                    exp = c + v * (missed + 1)
                    dist = np.linalg.norm(T._centroid(inst[[mask_iou for mask_iou in range(len(inst))][0]]) - exp) / np.sqrt(max(area, 1))
                    print(f"{speed},{stride} seq {s} frame {f}: old {prev[0]} missed {missed} area {area} label {lab} | new kw {k} n_inst {len(inst)} areas {[int(i.sum()) for i in inst]} dist {dist:.1f} truth area {int(g.sum())} lastseen {prev[1]}")
                else:
                    print(f"{speed},{stride} seq {s} frame {f}: old {prev[0]} dropped (lost) | kw {k} lastseen {prev[1]}")
            if tid is not None:
                prev = (tid, f)
            ids.append(tid)
    print("config", speed, stride, "switches", total)
