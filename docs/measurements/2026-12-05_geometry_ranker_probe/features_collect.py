"""Per query on generated scenes: the first [SEG]'s hidden state, the gated top-5 candidates and the
detector's patch map of each, the truth. Usage: collect2.py split seed n extra(0/1) test_phrasing(0/1) out"""
import pickle, sys
import numpy as np, torch
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge
from keyseg_core.scenes.queries import make_queries
split, seed, n, extra, test_phr, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
p = Predictor.from_pretrained(); R = p.reasoner; model = R.model
names = R.gate.names; STASH = []
orig = model.fuse
def fuse(hidden, ids, mask):
    seg, seg_b = model.gather(hidden, ids, model.token_ids.seg)
    STASH.append(seg[seg_b == 0][0].detach().float().clone())
    return orig(hidden, ids, mask)
model.fuse = fuse
kb, cfg = load_knowledge(), SceneConfig()
rows = []
with torch.inference_mode():
    for i in range(n):
        s = make_sample(seed, split, i, cfg, kb)
        qs = [] if test_phr else list(s.queries)
        if extra or test_phr:
            rng = np.random.default_rng([seed, i, 77])
            qs += make_queries(s.scene.objects, kb, rng, test=bool(test_phr), weights={"size": 0.5, "spatial": 0.5})[:2]
        frame = R.encode_frame(s.scene.image)
        for q in qs:
            STASH.clear()
            r = R.reason_frame(frame, [q.text])[0]
            idx = [names.index(c.text) for c in r.keyword_topk]
            rows.append(dict(scene=i, type=q.spec.type, spec=q.spec, text=q.text, h=STASH[0].numpy(),
                             top=idx, probs=np.array([c.prob for c in r.keyword_topk]),
                             sight=r.sight[:, idx].float().numpy(), target=names.index(q.spec.target)))
        if i % 100 == 0:
            print(i, len(rows), flush=True)
pickle.dump(rows, open(out, "wb"))
