import pickle, sys, numpy as np
import keyseg_core.inference.tracking as T
from keyseg_core.inference.instances import split_instances
from keyseg_core.eval.tracking import target_id, id_switches
orig = T._Track.gated_distance
def make(growth):
    def gd(self, mask, centre, label):
        d = orig(self, mask, centre, label)
        if d is None: return None
        f = {"fixed": 1.0, "sqrt": np.sqrt(self.missed + 1), "linear": self.missed + 1.0}[growth]
        return d / f
    return gd
data = pickle.load(open(sys.argv[1], "rb"))
for growth in ("fixed", "sqrt", "linear"):
    T._Track.gated_distance = make(growth)
    for gate in (2.0, 3.0, 4.0):
        res = []
        for key, rows in sorted(data.items()):
            sw = found = 0
            for d in rows:
                tr = T.MaskTracker(0.1, 10, gate); ids = []
                for m, k, g in zip(d["masks"], d["kw"], d["truth"]):
                    inst = split_instances(m, "mask", min_area=20)
                    ids.append(target_id(inst, tr.update(inst, [k] * len(inst)), g))
                sw += id_switches(ids)
            res.append(f"{key}: {sw}")
        print(growth, gate, " | ".join(res))
