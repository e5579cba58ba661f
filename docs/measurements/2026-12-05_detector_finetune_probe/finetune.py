"""Probe: fine-tune the shipped category detector (tower + patch head) on generated train scenes at the
frame's and the tiles' scale, then compare val pair AUC. CPU, time-boxed."""
import sys, time, math, numpy as np, torch
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge
from keyseg_core.train.stage1.targets import cell_targets, soft_cross_entropy
from keyseg_core.eval.visibility import calibrate_visibility
steps, batch, lr, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
crop_p = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
torch.manual_seed(0); rng = np.random.default_rng(0)
pred = Predictor.from_pretrained(refine="none")
det = pred.reasoner.gate.detector
pre = pred.processor.preprocess_clip
kb, cfg = load_knowledge(), SceneConfig()
before = calibrate_visibility(det, pre, progress=False)
print("before", before, flush=True)
grid = det.tower.config.image_size // det.tower.config.patch_size
det.requires_grad_(True).train()
opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
t0, index = time.time(), 0
for step in range(steps):
    pix, tg = [], []
    for _ in range(batch):
        sc = make_sample(7, "train", index, cfg, kb).scene; index += 1
        img, lab = sc.image, sc.labels
        if rng.random() < crop_p:
            h, w = lab.shape; f = rng.uniform(0.5, 0.8); th, tw = int(h * f), int(w * f)
            y, x = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
            img, lab = np.ascontiguousarray(img[y:y + th, x:x + tw]), lab[y:y + th, x:x + tw]
        lookup = np.array([0] + [det.names.index(o.category) + 1 for o in sc.objects])
        cats = torch.from_numpy(lookup[lab]).long()[None]
        pix.append(pre(img)); tg.append(cell_targets(cats, len(det.names) + 1, grid, "pad", 0)[0])
    hidden = det.tower(pixel_values=torch.stack(pix), output_hidden_states=True).hidden_states[det.feature_layer][:, 1:]
    loss = soft_cross_entropy(det.patch(hidden), torch.stack(tg))
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if step % 25 == 0: print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
det.requires_grad_(False).eval()
after = calibrate_visibility(det, pre, progress=False)
print("after", after, flush=True)
det.save(out)
