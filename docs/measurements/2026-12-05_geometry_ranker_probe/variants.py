"""Geometry ranker variants on cached data: train (seed 21, 500 scenes), val (seed 2, 300), and a
dev set from the test split's distribution with another seed (test seed 4, 300 scenes: held-out
phrasings and backgrounds, not the reported seed-3 scenes)."""
import sys, torch
from pathlib import Path
from keyseg_core.eval.ranker_data import collect, keyword_accuracy
from keyseg_core.modeling.geometry_ranker import fit_ranker
from keyseg_core.runtime.predictor import Predictor
cache = Path("/tmp/geo/v2/data.pt")
if not cache.exists():
    p = Predictor.from_pretrained(presence=False, refine="none")
    data = {"train": collect(p, 21, "train", 500, progress=False), "val": collect(p, 2, "val", 300, progress=False),
            "dev": collect(p, 4, "test", 300, progress=False)}
    torch.save({k: vars(v) for k, v in data.items()}, cache)
raw = torch.load(cache, weights_only=False)
from keyseg_core.eval.ranker_data import RankerData
data = {k: RankerData(**v) for k, v in raw.items()}
tr = data["train"]
for plausible in (0.1, 0.2, 0.3):
    for wd in (1e-2, 3e-2):
        r = fit_ranker(tr.hidden, tr.probs, tr.maps, tr.target, top_k=5, plausible=plausible, weight_decay=wd)
        for name in ("val", "dev"):
            b, a = keyword_accuracy(data[name], None), keyword_accuracy(data[name], r)
            print(f"plausible {plausible} wd {wd} {name}: " + " | ".join(f"{t} {b[t]:.3f}->{a[t]:.3f}" for t in b), flush=True)
