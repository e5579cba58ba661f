"""Size and spatial queries of a generated split: the gated candidates, the detector's patch map of
each, and the truth (target, direction / relation / reference, objects), for a geometry probe."""
import pickle, sys
import numpy as np, torch
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge
split, seed, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = Predictor.from_pretrained()
names = p.reasoner.gate.names
kb, cfg = load_knowledge(), SceneConfig()
rows = []
for i in range(n):
    s = make_sample(seed, split, i, cfg, kb)
    for q in s.queries:
        if q.spec.type not in ("size", "spatial"):
            continue
        r = p.reason(s.scene.image, q.text)
        top = [(c.text, c.prob) for c in r.keyword_topk]
        idx = [names.index(t) for t, _ in top]
        rows.append(dict(scene=i, type=q.spec.type, spec=q.spec, text=q.text, top=top,
                         sight=r.sight[:, idx].float().numpy(), visible=r.visible[idx].float().numpy(),
                         objects=[(o.category, o.bbox, o.visible) for o in s.scene.objects],
                         hw=s.scene.image.shape[:2]))
    if i % 50 == 0:
        print(i, len(rows), flush=True)
pickle.dump(rows, open(out, "wb"))
