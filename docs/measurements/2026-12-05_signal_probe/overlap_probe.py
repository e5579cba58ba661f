"""Throwaway probe: do "all the <kind>" queries overcount because two categories' instances are one
object (a cow read as a cat too)? Caches each query's instance masks (share 0.1, as shipped), then
counts again after dropping any instance whose mask overlaps an earlier (better) kept one by more
than a threshold: IoU, or the share of the later mask inside the earlier.

    python docs/measurements/2026-12-05_signal_probe/overlap_probe.py [SCENES]
"""
import sys

import numpy as np

from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.eval_queries import multi_instance_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

scenes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
p = Predictor.from_pretrained()
p.instance_share = 0.1
kb, cfg = load_knowledge(), SceneConfig()


def kept(instances, measure, threshold):
    out = []
    for inst in instances:
        m = inst.mask
        clash = False
        for k in out:
            inter = np.count_nonzero(m & k.mask)
            if measure == "iou":
                value = inter / max(np.count_nonzero(m | k.mask), 1)
            else:
                value = inter / max(np.count_nonzero(m), 1)
            clash |= value > threshold
        if not clash:
            out.append(inst)
    return out


for seed, split in ((2, "val"), (3, "test")):
    multi, single = [], []
    for index in range(scenes):
        s = make_sample(seed, split, index, cfg, kb)
        q = multi_instance_query(s.scene.objects, kb, np.random.default_rng([seed, SPLIT_IDS[split], index, 0x1257]),
                                 test=split == "test")
        if q is None:
            continue
        multi.append((p.predict(s.scene.image, q.text).instances, set(q.targets)))
        single.append(p.predict(s.scene.image, s.queries[0].text).instances)
    for measure, threshold in (("none", 1.0), ("iou", 0.5), ("iou", 0.3), ("iou", 0.1), ("inside", 0.5), ("inside", 0.3)):
        count = np.mean([len(kept(i, measure, threshold)) == len(t) for i, t in multi])
        exact = np.mean([{x.keyword for x in kept(i, measure, threshold)} == t for i, t in multi])
        one = np.mean([len(kept(i, measure, threshold)) == 1 for i in single])
        print(f"{split} {measure} {threshold}: count right {count:.3f}, exact {exact:.3f}, single stays one {one:.3f} ({len(multi)} queries)")
