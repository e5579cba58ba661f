"""Throwaway probe (issue 15): refit only the fusion on cached LLM features (extract.py) against the
stage-1 category prompts; saves the test split's prompts for masks.py.
  python refit.py CKPT regress TAU W_MSE EPOCHS OUT   the paper's fusion, cross-entropy over -dist^2/TAU + W_MSE x MSE
  python refit.py CKPT codebook EPOCHS OUT            the codebook fusion (fusion.codebook: 60), cross-entropy of its logits"""
import copy, dataclasses, sys, torch, numpy as np, torch.nn.functional as F
from keyseg_core.weights.checkpoint import load_checkpoint
from keyseg_core.modeling.fusion import FusionModule
torch.set_num_threads(2)
mode = sys.argv[2]
tr, te = torch.load("/tmp/probe/train.pt"), torch.load("/tmp/probe/test.pt")
table = tr["table"]; scale = table.pow(2).mean()
model, proc = load_checkpoint(sys.argv[1])
if mode == "codebook":
    epochs, out_path, lr = int(sys.argv[3]), sys.argv[4], 5e-4
    fusion = FusionModule(model.llava.config.text_config.hidden_size, 128, dataclasses.replace(model.config.fusion, codebook=60))
    fusion.load_state_dict(model.fusion.state_dict(), strict=False)
    with torch.no_grad():
        fusion.codebook.copy_(table)
else:
    tau, w_mse, epochs, out_path, lr = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], 1e-3
    fusion = copy.deepcopy(model.fusion).float()
fusion.train()
for p in fusion.parameters():
    p.requires_grad_(True)

def pad(hs):
    L = max(h.shape[0] for h in hs); H = torch.zeros(len(hs), L, hs[0].shape[1]); M = torch.zeros(len(hs), L, dtype=torch.bool)
    for i, h in enumerate(hs):
        H[i, :len(h)] = h.float(); M[i, :len(h)] = True
    return H, M

def run(data, idx):
    H, M = pad([data["hidden"][i] for i in idx]); b = torch.arange(len(idx))
    return fusion.fuse(data["seg"][idx].float(), b, data["key"][idx].float(), b, H, M)

def loss_of(s, logits, y):
    if mode == "codebook":
        return F.cross_entropy(logits, y)
    return F.cross_entropy(-torch.cdist(s, table).pow(2) / tau, y) + w_mse * (s - table[y]).pow(2).mean() / scale

opt = torch.optim.AdamW(fusion.parameters(), lr, weight_decay=0.0)
n = len(tr["row"]); steps = epochs * (n // 64); step = 0
for ep in range(epochs):
    perm = torch.randperm(n)
    for b in range(0, n - 63, 64):
        idx = perm[b:b + 64]
        loss = loss_of(*run(tr, idx), tr["row"][idx])
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
    with torch.no_grad():
        outs = torch.cat([run(te, torch.arange(i, min(i + 100, len(te["row"]))))[0] for i in range(0, len(te["row"]), 100)])
    acc = (torch.cdist(outs, table).argmin(1) == te["row"]).float().mean().item()
    rel = ((outs - table[te["row"]]).norm(dim=1) / table[te["row"]].norm(dim=1)).mean().item()
    print(f"epoch {ep} loss {loss.item():.3f} test nearest-prompt acc {acc:.3f} rel dist {rel:.3f}", flush=True)
torch.save({"fusion": fusion.state_dict(), "test_prompts": outs}, out_path)
