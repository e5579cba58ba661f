import sys, pickle, time, numpy as np, cv2
data = pickle.load(open(f"out/refine_probe/{sys.argv[1]}.pkl", "rb"))
def iou(a, b):
    u = (a | b).sum(); return 1.0 if u == 0 else (a & b).sum() / u
def grabcut(img, m, ring=0.25, iters=3, core=0, minring=3, guard=0):
    if m.sum() < 16: return m
    ys, xs = np.nonzero(m); h = ys.max()-ys.min()+1; w = xs.max()-xs.min()+1
    r = max(minring, int(ring * max(h, w)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2*r+1, 2*r+1))
    dil = cv2.dilate(m.astype(np.uint8), k) > 0
    gc = np.full(m.shape, cv2.GC_BGD, np.uint8)
    gc[dil] = cv2.GC_PR_BGD; gc[m] = cv2.GC_PR_FGD
    if core:
        c = max(1, int(core * max(h, w)))
        ero = cv2.erode(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2*c+1, 2*c+1))) > 0
        gc[ero] = cv2.GC_FGD
    bg, fg = np.zeros((1,65)), np.zeros((1,65))
    try:
        cv2.grabCut(np.ascontiguousarray(img[..., ::-1]), gc, None, bg, fg, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return m
    out = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if guard and (out.sum() < guard * m.sum()):
        return m
    return out
variants = {"base": lambda i, m: m}
for ring in (0.1, 0.15, 0.25, 0.35):
    variants[f"r{ring}"] = (lambda ring: lambda i, m: grabcut(i, m, ring))(ring)
variants["r.15 it1"] = lambda i, m: grabcut(i, m, .15, 1)
variants["r.15 it2"] = lambda i, m: grabcut(i, m, .15, 2)
variants["r.15 core.1"] = lambda i, m: grabcut(i, m, .15, 3, .1)
variants["r.15 guard.2"] = lambda i, m: grabcut(i, m, .15, 3, 0, 3, .2)
for name, f in variants.items():
    t = time.time(); ious = [iou(f(d["image"], d["pred"]), d["gt"]) for d in data]
    ok = [x for x, d in zip(ious, data) if d["kw"] == d["pkw"]]
    print(f"{name:14s} gIoU {np.mean(ious):.3f}  kw-right {np.mean(ok):.3f}  >=.5 {np.mean(np.array(ious)>=.5):.2f} {1000*(time.time()-t)/len(data):.0f} ms", flush=True)
