"""Throwaway probe 2: gate the codebook's category distribution by what the stage-1 patch head sees.

Per scene: its first query (target present) and an absent-category query (eval-presence's). p_llm =
softmax of the codebook fusion's logits; P(c) = max over patches of the stage-1 tower + patch head's
p(c). Gated g(c) = p_llm(c) P(c). Signals for presence: sum g, max g. Masks for present queries: S_hat
as shipped, the gated mixture, the gated argmax prompt; and the top-1 category / keyword accuracy.
"""
import copy, json, sys, time
import numpy as np, torch, torch.nn as nn
from safetensors.torch import load_file
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.eval.metrics import mask_iou
from keyseg_core.eval.presence import absent_rng
from keyseg_core.scenes.eval_queries import absent_query
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

torch.set_num_threads(2)
p = Predictor.from_pretrained()
m = p.model.eval()
kb = load_knowledge(); names = sorted(kb.categories)
heads = load_file("runs/keyseg_tiny_v2_bases/heads.safetensors")
bases = load_file("runs/keyseg_tiny_v2_bases/final/trainable.safetensors")
pref = "mllm.base_model.model.model.vision_tower."
tower0 = copy.deepcopy(m.llava.model.vision_tower)
tower0.load_state_dict({k[len(pref):]: v for k, v in bases.items() if k.startswith(pref)})
patch = nn.Linear(192, 61); patch.load_state_dict({"weight": heads["patch.weight"], "bias": heads["patch.bias"]})
codebook = m.fusion.codebook.detach()

def run(seed, split, n):
    rows = []
    cfg = SceneConfig()
    for index in range(n):
        s = make_sample(seed, split, index, cfg, kb)
        qa = absent_query(s.scene.objects, kb, absent_rng(seed, split, index), test=split == "test")
        img = s.scene.image
        with torch.no_grad():
            batch = p.processor([img, img], [s.queries[0].text, qa.text]).to(p.device, p.dtype)
            reasoned, reasonings = p.reasoner.reason_batch(batch, [s.queries[0].text, qa.text])
            pl = reasoned.prompt_logits.float().softmax(-1)  # (2, 60)
            h = tower0(pixel_values=batch.clip_pixels[:1], output_hidden_states=True).hidden_states[-1][:, 1:]
            P = patch(h).softmax(-1)[0, :, 1:].amax(0)  # (60,)
            g = pl * P
            gm = (g / g.sum(-1, keepdim=True).clamp(min=1e-12)) @ codebook
            ga = codebook[g.argmax(-1)]
            prompts = torch.cat([reasoned.prompts[:1], gm[:1], ga[:1]])
            logits, _ = m.segment(batch.sam_pixels[:1], prompts, torch.zeros(3, dtype=torch.long),
                                  batch.resized_hw[:1], batch.original_hw[:1])
            masks = (logits[0] > p.mask_threshold).cpu().numpy()
        truth = s.target_mask
        present_cats = {o.category for o in s.scene.objects}
        for j, kind in enumerate(("present", "absent")):
            kwd = reasonings[j].keyword
            rows.append(dict(kind=kind, type=(s.queries[0] if j == 0 else qa).spec.type,
                             target=(s.keyword if j == 0 else qa.spec.target),
                             keyword=kwd, llm_top=names[int(pl[j].argmax())], gated_top=names[int(g[j].argmax())],
                             sum_g=float(g[j].sum()), max_g=float(g[j].max()), P_llmtop=float(P[pl[j].argmax()]),
                             P_kw=float(P[names.index(kwd)]) if kwd in names else 0.0,
                             area=float(masks[0].mean()) if j == 0 else None,
                             P_target=float(P[names.index(s.keyword if j == 0 else qa.spec.target)]),
                             iou=[mask_iou(mk, truth) for mk in masks] if j == 0 else None,
                             kw_in_scene=kwd in present_cats))
    return rows

t0 = time.time()
out = {"val": run(2, "val", int(sys.argv[1])), "test": run(3, "test", int(sys.argv[1]))}
print(f"{time.time()-t0:.0f}s")
json.dump(out, open("/tmp/gate_probe.json", "w"))
