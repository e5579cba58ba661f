import pickle, numpy as np, time
from keyseg_core.inference.refine import MaskRefiner
data = pickle.load(open("out/refine_probe/val.pkl", "rb"))
def iou(a, b):
    u = (a | b).sum(); return 1.0 if u == 0 else (a & b).sum() / u
for side in (320, 240, 160, 128):
    for ring in (0.25,):
        r = MaskRefiner(max_side=side, ring=ring)
        t = time.time(); g = [iou(r(d["image"], d["pred"]), d["gt"]) for d in data]; print(side, ring, round(np.mean(g), 3), round((time.time()-t)/len(data)*1000, 1), "ms")
