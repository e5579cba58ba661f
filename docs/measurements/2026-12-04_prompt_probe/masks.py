"""Throwaway probe (issue 15): masks on the test split from S_hat, the true category prompt, a classifier
over [SEG]/[KEY] (mixture and snapped), S_hat snapped, and refit.py outputs: python masks.py CKPT [REFIT.pt ...]"""
import sys, torch, numpy as np
from keyseg_core.data.registry import open_dataset
from keyseg_core.weights.checkpoint import load_checkpoint
torch.set_num_threads(2)
tr, te = torch.load("/tmp/probe/train.pt"), torch.load("/tmp/probe/test.pt")
table = tr["table"]
model, proc = load_checkpoint(sys.argv[1]); model.eval()
ds = open_dataset("reasonseg", "data/openmoji", split="test")
# probe: key+seg -> logits over anchors (classifier), trained on train features
X = torch.cat([tr["seg"], tr["key"]], 1).float(); y = tr["row"]
mu, sd = X.mean(0), X.std(0) + 1e-5
torch.manual_seed(0)
clf = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, table.shape[0]))
opt = torch.optim.AdamW(clf.parameters(), 1e-3, weight_decay=1e-2)
for ep in range(100):
    perm = torch.randperm(len(X))
    for b in range(0, len(X), 256):
        i = perm[b:b+256]
        loss = torch.nn.functional.cross_entropy(clf((X[i]-mu)/sd), y[i]); opt.zero_grad(); loss.backward(); opt.step()
Xt = torch.cat([te["seg"], te["key"]], 1).float()
with torch.no_grad():
    logits = clf((Xt-mu)/sd)
print("classifier acc", (logits.argmax(1) == te["row"]).float().mean().item())
extra = {f"refit:{p}": torch.load(p)["test_prompts"] for p in sys.argv[2:]}
variants = {**extra,
    "shat": te["shat"],
    "true_anchor": table[te["row"]],
    "snap_clf": table[logits.argmax(1)],
    "soft_clf": logits.softmax(1) @ table,
    "shat_snap": table[torch.cdist(te["shat"], table).argmin(1)],
}
ious = {k: [] for k in variants}
qt = te["qtype"]
with torch.inference_mode():
    for n, i in enumerate(te["idx"].tolist()):
        x = ds[i]
        batch = proc([x.image], [x.queries[0]])
        emb = model.sam.encode(batch.sam_pixels)
        for k, v in variants.items():
            masks, _, _ = model.decode_prompts(emb, v[n:n+1].to(emb.dtype), torch.zeros(1, dtype=torch.long), [0],
                                               batch.resized_hw, batch.original_hw)
            pred = (masks[0][0] > 0).numpy()
            gt = x.mask == 1; valid = x.mask != 255
            inter = (pred & gt & valid).sum(); union = ((pred | gt) & valid).sum()
            ious[k].append(inter / union if union else 1.0)
for k, v in ious.items():
    v = np.array(v)
    by = {t: round(float(v[[q == t for q in qt]].mean()), 3) for t in sorted(set(qt))}
    print(f"{k:12s} gIoU {v.mean():.3f}", by)
