"""Throwaway probe 5: does sharpening the codebook's belief (softmax(alpha * logits)) before the gate
separate present from absent targets better? Saves logits and detector visibility per query."""
import json
import numpy as np, torch
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.eval.presence import absent_rng
from keyseg_core.scenes.eval_queries import absent_query
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

p = Predictor.from_pretrained(presence=False)
kb, cfg = load_knowledge(), SceneConfig()
names = p.reasoner.gate.names
rows = {}
for seed, split in ((2, "val"), (3, "test")):
    out = []
    for index in range(200):
        s = make_sample(seed, split, index, cfg, kb)
        qa = absent_query(s.scene.objects, kb, absent_rng(seed, split, index), test=split == "test")
        with torch.no_grad():
            batch = p.processor([s.scene.image] * 2, [s.queries[0].text, qa.text])
            reasoned, _ = p.reasoner.reason_batch(batch, [s.queries[0].text, qa.text])
            sight = p.reasoner.sight(batch.clip_pixels)
        for j, target in enumerate((s.keyword, qa.spec.target)):
            out.append(dict(present=j == 0, target=names.index(target), logits=reasoned.prompt_logits[j].tolist(),
                            visible=sight[j].amax(0).tolist()))
    rows[split] = out
json.dump(rows, open("/tmp/sharpen.json", "w"))

def evaluate(split, alpha):
    r = rows[split]
    L = torch.tensor([x["logits"] for x in r]); V = torch.tensor([x["visible"] for x in r])
    g = (alpha * L).softmax(-1) * V
    mass = g.sum(-1).numpy(); present = np.array([x["present"] for x in r])
    top = g.argmax(-1).numpy(); target = np.array([x["target"] for x in r])
    return mass, present, float((top[present] == target[present]).mean())

def auc(pos, neg):
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())

for alpha in (0.5, 1.0, 1.5, 2.0, 3.0, 5.0):
    mv, pv, _ = evaluate("val", alpha); mt, pt, acc = evaluate("test", alpha)
    t = np.sort(mv[pv])[int(0.05 * pv.sum())] - 1e-12
    print(f"alpha {alpha}: test AUC {auc(mt[pt], mt[~pt]):.3f} miss {(mt[pt] <= t).mean():.3f} "
          f"FP {(mt[~pt] > t).mean():.3f}  top-1 on present {acc:.3f}", flush=True)
