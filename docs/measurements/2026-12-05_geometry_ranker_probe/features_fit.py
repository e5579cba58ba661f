"""Fit a query-conditioned geometric re-ranker of the gated top-5 on cached features; report keyword
top-1 by query type on val and on held-out phrasings."""
import pickle, sys
import numpy as np, torch
torch.manual_seed(0)
FEATS = sys.argv[1] if len(sys.argv) > 1 else "area,cx,cy"
TAU = float(__import__("os").environ.get("TAU", "0"))
def feats(sight, probs):
    P, k = sight.shape; g = int(round(P ** 0.5)); m = sight.reshape(g, g, k)
    area = m.sum((0, 1)) + 1e-4; ys, xs = np.mgrid[0:g, 0:g] / (g - 1)
    w = m / area
    cx = (w * xs[..., None]).sum((0, 1)); cy = (w * ys[..., None]).sum((0, 1))
    la = np.log(area)
    ok = np.zeros(k, bool); ok[:len(probs)] = probs >= TAU * probs[0]
    def c(v):
        v = v - v[ok].mean(); v[~ok] = 0; return v
    out = {"area": c(la), "cx": c(cx), "cy": c(cy)}
    def ext(v, hi):
        e = np.zeros(k); cand = np.where(ok)[0]
        if len(cand) > 1: e[cand[np.argmax(v[cand]) if hi else np.argmin(v[cand])]] = 1.0
        return e
    out.update(maxa=ext(la, True), mina=ext(la, False), maxx=ext(cx, True), minx=ext(cx, False),
               maxy=ext(cy, True), miny=ext(cy, False))
    return np.stack([out[f] for f in FEATS.split(",")], 1)  # (k, F)
def tensors(rows):
    H = torch.tensor(np.stack([r["h"] for r in rows]))
    X = torch.tensor(np.stack([feats(r["sight"], r["probs"]) for r in rows]), dtype=torch.float32)
    L = torch.tensor(np.log(np.stack([np.pad(r["probs"], (0, 5 - len(r["probs"])), constant_values=1e-9) for r in rows]) + 1e-9), dtype=torch.float32)
    Y = torch.tensor([r["top"].index(r["target"]) if r["target"] in r["top"] else -1 for r in rows])
    return H, X, L, Y
tr, va, ho = (pickle.load(open(f"/tmp/geo/{n}.pkl", "rb")) for n in ("train", "val", "heldout"))
Htr, Xtr, Ltr, Ytr = tensors(tr)
mu, sd = Htr.mean(0), Htr.std(0) + 1e-4
F = Xtr.shape[2]
def score(W, b, H, X, L):
    w = ((H - mu) / sd) @ W + b  # (N, F)
    return L + (X * w[:, None, :]).sum(-1)
for wd in [float(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "1e-3,1e-2,1e-1").split(",")]:
    W = torch.zeros(Htr.shape[1], F, requires_grad=True); b = torch.zeros(F, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=1e-2)
    keep = Ytr >= 0
    for step in range(600):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(score(W, b, Htr, Xtr, Ltr)[keep], Ytr[keep]) + wd * (W ** 2).sum()
        loss.backward(); opt.step()
    print(f"feats {FEATS} wd {wd}: train loss {loss.item():.3f}")
    for name, rows in (("val", va), ("heldout", ho)):
        H, X, L, Y = tensors(rows)
        with torch.no_grad():
            pick = score(W, b, H, X, L).argmax(1)
        base = torch.zeros_like(pick)
        types = sorted({r["type"] for r in rows})
        line = []
        for t in types + ["all"]:
            m = torch.tensor([t == "all" or r["type"] == t for r in rows])
            line.append(f"{t} {m.sum().item()}: {(base[m] == Y[m]).float().mean():.2f}->{(pick[m] == Y[m]).float().mean():.2f}")
        print("  ", name, " | ".join(line))
