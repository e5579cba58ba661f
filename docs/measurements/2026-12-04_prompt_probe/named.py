"""Does the mask land on what the keyword names? (issue 15) For generated test scenes (seed 3, as the
README's evaluation): IoU of the predicted mask with the target, and with the object the predicted
keyword names (when the scene holds one), and how often the mask covers more of another object than
of the named one.  python named.py CKPT|shipped N"""
import sys, numpy as np
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import make_sample

predictor = Predictor.from_pretrained(None if sys.argv[1] == "shipped" else sys.argv[1])
target, named, lands, off = [], [], 0, 0
for i in range(int(sys.argv[2])):
    s = make_sample(3, "test", i)
    cats = [o.category for o in s.scene.objects]
    for q in s.queries[:1]:
        p = predictor.predict(s.scene.image, q.text)
        objects = [s.scene.labels == k + 1 for k in range(len(cats))]
        iou = lambda a, b: float((a & b).sum() / max((a | b).sum(), 1))
        target.append(iou(p.mask, objects[cats.index(s.keyword)]))
        if p.keyword in cats:
            m = objects[cats.index(p.keyword)]
            named.append(iou(p.mask, m))
            cover = [(p.mask & o).sum() for o in objects]
            lands += int(np.argmax(cover) == cats.index(p.keyword) and max(cover) > 0)
            off += 1
print(f"{sys.argv[1]}: target IoU {np.mean(target):.3f}; keyword names an object in the scene {off}/{len(target)}; "
      f"IoU with the named object {np.mean(named):.3f}; mask mostly on the named object {lands}/{off}")
