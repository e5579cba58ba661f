import sys, pickle, time, numpy as np, cv2
data = pickle.load(open(f"out/refine_probe/{sys.argv[1]}.pkl", "rb"))
def iou(a, b):
    u = (a | b).sum(); return 1.0 if u == 0 else (a & b).sum() / u
def grabcut(img, m, ring=0.25, iters=1, crop=0.0, core=0):
    if m.sum() < 16: return m
    ys, xs = np.nonzero(m); y0, y1, x0, x1 = ys.min(), ys.max()+1, xs.min(), xs.max()+1
    size = max(y1-y0, x1-x0)
    r = max(3, int(ring * size))
    if crop:
        c = r + int(crop * size)
        Y0, Y1, X0, X1 = max(0, y0-c), min(m.shape[0], y1+c), max(0, x0-c), min(m.shape[1], x1+c)
    else:
        Y0, Y1, X0, X1 = 0, m.shape[0], 0, m.shape[1]
    mc = m[Y0:Y1, X0:X1].astype(np.uint8)
    dil = cv2.dilate(mc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2*r+1, 2*r+1))) > 0
    gc = np.full(mc.shape, cv2.GC_BGD, np.uint8); gc[dil] = cv2.GC_PR_BGD; gc[mc > 0] = cv2.GC_PR_FGD
    if core:
        k = max(1, int(core * size))
        gc[cv2.erode(mc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2*k+1, 2*k+1))) > 0] = cv2.GC_FGD
    bg, fg = np.zeros((1,65)), np.zeros((1,65))
    try:
        cv2.grabCut(np.ascontiguousarray(img[Y0:Y1, X0:X1, ::-1]), gc, None, bg, fg, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return m
    out = np.zeros_like(m); out[Y0:Y1, X0:X1] = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return out
variants = {"base": lambda i, m: m}
for ring in (0.25, 0.3):
    for crop in (0, 0.25, 0.5):
        variants[f"r{ring} c{crop}"] = (lambda ring, crop: lambda i, m: grabcut(i, m, ring, 1, crop))(ring, crop)
variants["r.25 c.25 it2"] = lambda i, m: grabcut(i, m, .25, 2, .25)
variants["r.25 c.25 core.1"] = lambda i, m: grabcut(i, m, .25, 1, .25, .1)
for name, f in variants.items():
    t = time.time(); ious = [iou(f(d["image"], d["pred"]), d["gt"]) for d in data]
    ok = [x for x, d in zip(ious, data) if d["kw"] == d["pkw"]]
    print(f"{name:18s} gIoU {np.mean(ious):.3f}  kw-right {np.mean(ok):.3f}  >=.5 {np.mean(np.array(ious)>=.5):.2f} {1000*(time.time()-t)/len(data):.0f} ms", flush=True)
