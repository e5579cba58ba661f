"""Throwaway probe 4: does the detector's own patch map of the chosen category trim masks that spill?

Per val/test scene (first query), the shipped v2.1 mask is intersected with the upsampled patch
probability map of its keyword's category above tau (optionally dilated by one patch). gIoU per tau.
"""
import sys
import numpy as np, torch, torch.nn.functional as F
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.eval.metrics import mask_iou
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

p = Predictor.from_pretrained(presence=False)
det = p.reasoner.gate.detector
kb, cfg = load_knowledge(), SceneConfig()
TAUS = (0.0, 0.05, 0.1, 0.2, 0.3)

def patch_map(image, category):
    """(H, W) probability of `category` per pixel: the patch grid in the clip frame, mapped back."""
    pixels = p.processor.preprocess_clip(image)[None]
    hidden = det.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[det.feature_layer][:, 1:]
    probs = det.patch(hidden).softmax(-1)[0, :, 1 + det.names.index(category)]
    g = int(round(probs.numel() ** 0.5))
    grid = probs.view(1, 1, g, g)
    s = pixels.shape[-1]
    full = F.interpolate(grid, (s, s), mode="bilinear", align_corners=False)[0, 0]
    h, w = image.shape[:2]
    scale = s / max(h, w)  # 'pad': the image is centred in the square
    rh, rw = int(round(h * scale)), int(round(w * scale))
    y0, x0 = (s - rh) // 2, (s - rw) // 2
    crop = full[y0:y0 + rh, x0:x0 + rw]
    return F.interpolate(crop[None, None], (h, w), mode="bilinear", align_corners=False)[0, 0].numpy()

for seed, split in ((2, "val"), (3, "test")):
    ious = {t: [] for t in TAUS}
    for index in range(int(sys.argv[1])):
        s = make_sample(seed, split, index, cfg, kb)
        with torch.no_grad():
            pred = p.predict(s.scene.image, s.queries[0].text)
            m = patch_map(s.scene.image, pred.keyword) if pred.keyword in det.names else None
        for t in TAUS:
            mask = pred.mask if (m is None or t == 0.0) else pred.mask & (m > t)
            ious[t].append(mask_iou(mask, s.target_mask))
    print(split, {t: round(float(np.mean(v)), 4) for t, v in ious.items()}, flush=True)
