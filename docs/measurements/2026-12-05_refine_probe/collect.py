"""Collect shipped predictions on val/test: image, pred mask, gt mask, keyword right."""
import sys, pickle, numpy as np, torch
from keyseg_core.data import open_dataset
from keyseg_core.runtime.predictor import Predictor
split, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
pred = Predictor.from_pretrained(refine="none")  # the masks as SAM and the region trim leave them
ds = open_dataset("reasonseg", "data/openmoji", split)
out = []
for i in range(min(n, len(ds))):
    s = ds[i]
    p = pred.predict(s.image, s.queries[0])
    out.append(dict(image=s.image, gt=(s.mask == 1), pred=p.mask, kw=s.keyword, pkw=p.keyword, qt=s.query_type))
    if i % 50 == 0: print(i, flush=True)
import os; os.makedirs("out/refine_probe", exist_ok=True)
pickle.dump(out, open(f"out/refine_probe/{split}.pkl", "wb"))
