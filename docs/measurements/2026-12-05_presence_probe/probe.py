"""Throwaway probe: can a per-category presence signal be read off the shipped model's frozen parts?

(a) stage 1's patch head on the vision tower (shipped tower, and the stage-1 tower it was trained with);
(b) a new cell head trained here on the shipped SAM image encoder's embeddings (frozen since stage 1).
Presence of category c in a scene = max over cells/patches of p(c). Pairs: every (scene, category);
AUC and false positives at <= 5% misses (threshold from val, applied to test).
"""
import sys, time
import numpy as np, torch, torch.nn as nn
from safetensors.torch import load_file
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.train.stage1.scene_source import SceneSpec, prepare_many
from keyseg_core.train.stage1.targets import SceneBatch, category_maps, cell_targets, soft_cross_entropy

torch.manual_seed(0)
torch.set_num_threads(2)
p = Predictor.from_pretrained()
m = p.model.eval()
sam = m.sam
tower = m.llava.model.vision_tower
heads = load_file("runs/keyseg_tiny_v2_bases/heads.safetensors")
bases = load_file("runs/keyseg_tiny_v2_bases/final/trainable.safetensors")
pref = "mllm.base_model.model.model.vision_tower."
import copy
tower0 = copy.deepcopy(tower)
tower0.load_state_dict({k[len(pref):]: v for k, v in bases.items() if k.startswith(pref)})
patch = nn.Linear(heads["patch.weight"].shape[1], 61); patch.load_state_dict({"weight": heads["patch.weight"], "bias": heads["patch.bias"]})
NC = 61

def spec(seed, split):
    return SceneSpec(seed, split, 320, 240, 3, 6, sam.image_size, p.processor.clip_size, m.config.backbone.image_preprocess)

@torch.no_grad()
def features(scenes):
    out = []
    for i in range(0, len(scenes), 32):
        b = SceneBatch.stack(scenes[i:i + 32], sam.image_size, torch.device("cpu"))
        emb = sam.encode(b.sam_pixels)
        cats = category_maps(b.labels, b.categories)
        tgt = cell_targets(cats, NC, emb.shape[-1], "sam", sam.image_size)
        h1 = tower(pixel_values=b.clip_pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        h0 = tower0(pixel_values=b.clip_pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        present = torch.zeros(len(b.categories), NC - 1, dtype=torch.bool)
        for j in range(len(b.categories)):
            present[j, b.categories[j][b.valid[j]]] = True
        out.append((emb, tgt, patch(h1).softmax(-1)[..., 1:].amax(1), patch(h0).softmax(-1)[..., 1:].amax(1), present))
    return [torch.cat(x) for x in zip(*out)]

def fp_at(present_scores, absent_scores, cal_present, max_miss=0.05):
    t = np.quantile(cal_present, max_miss)
    return float((present_scores < t).mean()), float((absent_scores >= t).mean())

def auc(pos, neg):
    pos, neg = np.asarray(pos), np.asarray(neg)
    order = np.argsort(np.concatenate([pos, neg]))
    ranks = np.empty(len(order)); ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))

t0 = time.time()
ntrain = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
train = features(prepare_many(spec(100, "train"), 0, ntrain, 1))
val = features(prepare_many(spec(2, "val"), 0, 400, 1))
test = features(prepare_many(spec(3, "test"), 0, 400, 1))
print(f"features {time.time()-t0:.0f}s", flush=True)

def report(name, score_val, score_test):
    pv, pt = val[4], test[4]
    a = auc(score_test[pt].numpy(), score_test[~pt].numpy())
    miss, fp = fp_at(score_test[pt].numpy(), score_test[~pt].numpy(), score_val[pv].numpy())
    print(f"{name:28s} test AUC {a:.4f}  miss {miss:.3f}  FP {fp:.3f}", flush=True)

report("patch head, stage-1 tower", val[3], test[3])
report("patch head, shipped tower", val[2], test[2])

for kind in ("linear", "mlp"):
    torch.manual_seed(0)
    C = train[0].shape[1]
    head = nn.Conv2d(C, NC, 1) if kind == "linear" else nn.Sequential(nn.Conv2d(C, 128, 3, padding=1), nn.GELU(), nn.Conv2d(128, NC, 1))
    opt = torch.optim.AdamW(head.parameters(), 3e-3)
    n = len(train[0]); steps = 1500
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    t0 = time.time()
    for s in range(steps):
        idx = torch.randint(0, n, (64,))
        emb, tgt = train[0][idx], train[1][idx]
        flip = torch.rand(()) < 0.5
        logits = head(emb).flatten(2).transpose(1, 2)
        loss = soft_cross_entropy(logits, tgt)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if s % 500 == 0: print(kind, s, float(loss), flush=True)
    with torch.no_grad():
        sv = head(val[0]).flatten(2).softmax(1)[:, 1:].amax(-1)
        st = head(test[0]).flatten(2).softmax(1)[:, 1:].amax(-1)
    print(f"{kind} trained {time.time()-t0:.0f}s")
    report(f"cell head ({kind}) on SAM", sv, st)
    torch.save(head.state_dict(), f"/tmp/presence_head_{kind}.pt")
