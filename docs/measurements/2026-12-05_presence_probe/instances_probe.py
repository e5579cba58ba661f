"""Throwaway probe 3: with the category gate, how many gated categories clear a share tau, on
"all the <kind>" queries (should be all members) and on single-target first queries (should be one)?"""
import json
import numpy as np
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.eval_queries import multi_instance_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

p = Predictor.from_pretrained(presence=False)
kb, cfg = load_knowledge(), SceneConfig()
out = {}
for seed, split in ((2, "val"), (3, "test")):
    rows = []
    for index in range(200):
        s = make_sample(seed, split, index, cfg, kb)
        rng = np.random.default_rng([seed, SPLIT_IDS[split], index, 0x1257])
        q = multi_instance_query(s.scene.objects, kb, rng, test=split == "test")
        single = p.predict(s.scene.image, s.queries[0].text)
        rows.append(dict(kind="single", targets=[s.keyword], topk=[(c.text, c.prob) for c in single.keyword_topk]))
        if q is not None:
            multi = p.predict(s.scene.image, q.text)
            rows.append(dict(kind="multi", targets=list(q.targets), topk=[(c.text, c.prob) for c in multi.keyword_topk]))
    out[split] = rows
json.dump(out, open("/tmp/instances_probe.json", "w"))
for split, rows in out.items():
    for tau in (0.05, 0.1, 0.15, 0.2, 0.3):
        res = {}
        for kind in ("single", "multi"):
            sel = [r for r in rows if r["kind"] == kind]
            count = [sum(pr >= tau for _, pr in r["topk"]) == len(r["targets"]) for r in sel]
            exact = [{c for c, pr in r["topk"] if pr >= tau} == set(r["targets"]) for r in sel]
            res[kind] = (len(sel), np.mean(count), np.mean(exact))
        print(split, tau, res)
