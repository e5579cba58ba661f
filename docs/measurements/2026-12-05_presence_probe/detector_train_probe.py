"""Throwaway probe 6: does more training of the category detector (stage 1's tower + patch head, on
the CPU, new scenes) make it see better? Presence AUC / false positives at 5% misses on (scene,
category) pairs of 400 test scenes, before and after."""
import sys, time
import numpy as np, torch
from keyseg_core.modeling.category_detector import CategoryDetector
from keyseg_core.train.stage1.scene_source import SceneSpec, prepare_many
from keyseg_core.train.stage1.targets import SceneBatch, category_maps, cell_targets, soft_cross_entropy

torch.manual_seed(0)
minutes, pool = float(sys.argv[1]), int(sys.argv[2])
det = CategoryDetector.load("keyseg_core/weights/keyseg-tiny/category_detector.safetensors")
K = len(det.names)
spec = lambda seed, split: SceneSpec(seed, split, 320, 240, 3, 6, 192, 128, "pad")

def batches(scenes, size=64):
    for i in range(0, len(scenes), size):
        yield SceneBatch.stack(scenes[i:i + size], 192, torch.device("cpu"))

def evaluate(scenes):
    scores, present = [], []
    det.eval()
    with torch.no_grad():
        for b in batches(scenes):
            scores.append(det(b.clip_pixels))
            pr = torch.zeros(len(b.categories), K, dtype=torch.bool)
            for j in range(len(b.categories)):
                pr[j, b.categories[j][b.valid[j]]] = True
            present.append(pr)
    return torch.cat(scores).numpy(), torch.cat(present).numpy()

def report(name, val, test):
    (sv, pv), (st, pt) = val, test
    t = np.quantile(sv[pv], 0.05)
    pos, neg = st[pt], st[~pt]
    order = np.argsort(np.concatenate([pos, neg])); ranks = np.empty(len(order)); ranks[order] = np.arange(1, len(order) + 1)
    auc = (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    print(f"{name}: test AUC {auc:.4f} miss {(pos < t).mean():.3f} FP {(neg >= t).mean():.3f}", flush=True)

t0 = time.time()
val_scenes, test_scenes = prepare_many(spec(2, "val"), 0, 400, 1), prepare_many(spec(3, "test"), 0, 400, 1)
train = prepare_many(spec(101, "train"), 0, pool, 1)
print(f"scenes {time.time() - t0:.0f}s", flush=True)
report("before", evaluate(val_scenes), evaluate(test_scenes))
det.requires_grad_(True).train()
opt = torch.optim.AdamW(det.parameters(), lr=1e-4, weight_decay=0.0)
step, t0, g = 0, time.time(), torch.Generator().manual_seed(0)
while time.time() - t0 < minutes * 60:
    idx = torch.randint(0, len(train), (32,), generator=g).tolist()
    scenes = [train[i].flipped() if torch.rand((), generator=g) < 0.5 else train[i] for i in idx]
    b = SceneBatch.stack(scenes, 192, torch.device("cpu"))
    cats = category_maps(b.labels, b.categories)
    hidden = det.tower(pixel_values=b.clip_pixels, output_hidden_states=True).hidden_states[det.feature_layer][:, 1:]
    loss = soft_cross_entropy(det.patch(hidden), cell_targets(cats, K + 1, 8, "pad", 0))
    opt.zero_grad(); loss.backward(); opt.step(); step += 1
    if step % 100 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
report(f"after {step} steps", evaluate(val_scenes), evaluate(test_scenes))
det.save("/tmp/detector_more.safetensors")
