import pickle, sys
import numpy as np
rows = pickle.load(open(sys.argv[1], "rb"))
def stats(sight):  # (P, k) -> area, cx, cy per candidate on the 8x8 grid
    P, k = sight.shape; g = int(round(P ** 0.5)); m = sight.reshape(g, g, k)
    area = m.sum((0, 1)); ys, xs = np.mgrid[0:g, 0:g]
    w = m / np.maximum(area, 1e-6)
    return area, (w * xs[..., None]).sum((0, 1)) / g, (w * ys[..., None]).sum((0, 1)) / g
for typ in ("size", "spatial"):
    R = [r for r in rows if r["type"] == typ]
    top1 = np.mean([r["top"][0][0] == r["spec"].target for r in R])
    in3 = np.mean([r["spec"].target in [t for t, _ in r["top"][:3]] for r in R])
    in5 = np.mean([r["spec"].target in [t for t, _ in r["top"]] for r in R])
    print(typ, len(R), f"top1 {top1:.2f} in top3 {in3:.2f} in top5 {in5:.2f}")
    if typ == "size":
        for k in (2, 3, 5):
            for tau in (0.0, 0.05, 0.1, 0.2):
                ok = 0
                for r in R:
                    area, _, _ = stats(r["sight"])
                    probs = np.array([p for _, p in r["top"]])
                    cand = [j for j in range(min(k, len(r["top"]))) if probs[j] >= tau * probs[0]]
                    pick = max(cand, key=lambda j: area[j]) if r["spec"].direction == "largest" else min(cand, key=lambda j: area[j])
                    ok += r["top"][pick][0] == r["spec"].target
                print(f"  oracle direction, top{k}, prob>={tau}*best: {ok/len(R):.2f}")
        # true-area oracle: does the detector's area rank like the true visible area?
        agree = []
        for r in R:
            area, _, _ = stats(r["sight"])
            true = {c: v for c, _, v in r["objects"]}
            cs = [t for t, _ in r["top"][:3] if t in true]
            if len(cs) >= 2:
                a = [area[[t for t, _ in r["top"]].index(c)] for c in cs]; b = [true[c] for c in cs]
                agree.append(np.argmax(a) == np.argmax(b))
        print("  detector area argmax == true area argmax (top3 present):", np.mean(agree), len(agree))
