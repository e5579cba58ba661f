"""Throwaway probe (issue 15): cache the LLM's [SEG]/[KEY] hidden states, the hidden sequence and S_hat
of a stage-2 model on ReasonSeg-format generated samples, with each sample's stage-1 anchor."""
import sys, time, torch, numpy as np
from keyseg_core.data.registry import open_dataset
from keyseg_core.weights.checkpoint import load_checkpoint
from keyseg_core.train.stage2.anchors import PromptAnchors
from keyseg_core.scenes.knowledge import load_knowledge

ckpt, bases, split, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(2)
model, proc = load_checkpoint(ckpt)
model.eval()
anchors = PromptAnchors.load(f"{bases}/heads.safetensors", sorted(load_knowledge().categories))
ds = open_dataset("reasonseg", "data/openmoji", split=split)
idx = np.random.default_rng(0).permutation(len(ds))[:n]
rec = {k: [] for k in ("seg", "key", "shat", "row", "hidden", "mask", "qtype", "keyword")}
t = time.time()
with torch.inference_mode():
    for s in range(0, n, 8):
        samples = [ds[int(i)] for i in idx[s:s + 8]]
        batch = proc([x.image for x in samples], [x.queries[0] for x in samples])
        r = model.reason(batch)
        seg, _ = model.gather(r.hidden, batch.input_ids, model.token_ids.seg)
        key, _ = model.gather(r.hidden, batch.input_ids, model.token_ids.key)
        for j, x in enumerate(samples):
            rec["seg"].append(seg[j].clone()); rec["key"].append(key[j].clone()); rec["shat"].append(r.prompts[j].clone())
            rec["row"].append(anchors.rows.get(x.keyword, -1)); rec["qtype"].append(x.query_type); rec["keyword"].append(x.keyword)
            m = batch.attention_mask[j].bool()
            rec["hidden"].append(r.hidden[j][m].half().clone()); rec["mask"].append(int(m.sum()))
        if s % 400 == 0:
            print(s, time.time() - t, flush=True)
torch.save({"seg": torch.stack(rec["seg"]), "key": torch.stack(rec["key"]), "shat": torch.stack(rec["shat"]),
            "row": torch.tensor(rec["row"]), "hidden": rec["hidden"], "qtype": rec["qtype"], "keyword": rec["keyword"],
            "table": anchors.table, "idx": torch.tensor(idx)}, out)
print("done", n, time.time() - t)
