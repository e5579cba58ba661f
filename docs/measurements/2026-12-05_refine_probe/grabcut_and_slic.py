import sys, pickle, time, numpy as np, cv2
from skimage.segmentation import slic
data = pickle.load(open(f"out/refine_probe/{sys.argv[1]}.pkl", "rb"))
print(data[0]["image"].shape)
def iou(a, b):
    u = (a | b).sum(); return 1.0 if u == 0 else (a & b).sum() / u
def grabcut(img, m, ring=0.25, iters=3):
    if m.sum() < 16: return m
    ys, xs = np.nonzero(m); h = ys.max()-ys.min()+1; w = xs.max()-xs.min()+1
    r = max(3, int(ring * max(h, w)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2*r+1, 2*r+1))
    dil = cv2.dilate(m.astype(np.uint8), k) > 0
    ero = cv2.erode(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5,5))) > 0
    gc = np.full(m.shape, cv2.GC_BGD, np.uint8)
    gc[dil] = cv2.GC_PR_BGD; gc[m] = cv2.GC_PR_FGD
    bg, fg = np.zeros((1,65)), np.zeros((1,65))
    try:
        cv2.grabCut(np.ascontiguousarray(img[..., ::-1]), gc, None, bg, fg, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return m
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
def snap(img, m, n=300, t=0.5):
    seg = slic(img, n_segments=n, compactness=10, start_label=0)
    frac = np.bincount(seg.ravel(), m.ravel(), seg.max()+1) / np.bincount(seg.ravel(), minlength=seg.max()+1)
    return frac[seg] > t
res = {}
for name, f in [("base", lambda i, m: m), ("gc.25", lambda i, m: grabcut(i, m)), ("gc.5", lambda i, m: grabcut(i, m, .5)),
                ("gc.25x5", lambda i, m: grabcut(i, m, .25, 5)), ("slic300", lambda i, m: snap(i, m)), ("slic600", lambda i, m: snap(i, m, 600))]:
    t = time.time(); ious = [iou(f(d["image"], d["pred"]), d["gt"]) for d in data]
    ok = [x for x, d in zip(ious, data) if d["kw"] == d["pkw"]]
    print(f"{name:10s} gIoU {np.mean(ious):.3f}  on-keyword-right {np.mean(ok):.3f}  {1000*(time.time()-t)/len(data):.0f} ms", flush=True)
