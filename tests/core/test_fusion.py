"""The fusion module against a hand-written reference of S_hat = MLP(SelfAttn(CrossAttn(S, K) + S))."""

import math

import pytest
import torch
from torch import nn

from keyseg_core.config.model import FusionConfig
from keyseg_core.config.presets import FUSION_PRESETS
from keyseg_core.modeling.fusion import FusionModule

D, HEADS, PROMPT = 16, 2, 8


def attend(q: torch.Tensor, kv: torch.Tensor, m: nn.MultiheadAttention) -> torch.Tensor:
    """One query vector (w,) over rows of kv (n, w), written out from the layer's weights."""
    w, b = m.in_proj_weight, m.in_proj_bias
    W = q.shape[-1]
    qp, kp, vp = q @ w[:W].T + b[:W], kv @ w[W:2 * W].T + b[W:2 * W], kv @ w[2 * W:].T + b[2 * W:]
    hd = W // HEADS
    heads = []
    for h in range(HEADS):
        sl = slice(h * hd, (h + 1) * hd)
        scores = torch.stack([(qp[sl] * kp[j, sl]).sum() / math.sqrt(hd) for j in range(kv.shape[0])])
        weights = torch.softmax(scores, dim=0)
        heads.append((weights[:, None] * vp[:, sl]).sum(0))
    return torch.cat(heads) @ m.out_proj.weight.T + m.out_proj.bias


def project(layers: nn.Sequential | None, x: torch.Tensor) -> torch.Tensor:
    """P(x) = W2 relu(W1 x + b1) + b2, or x itself in the LLM space."""
    if layers is None:
        return x
    first, _, second = layers
    return torch.relu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias


def reference(module: FusionModule, seg, seg_b, key, key_b, seq, seq_mask) -> torch.Tensor:
    cfg = module.config
    out = []
    for s, b in zip(seg, seg_b):
        s = project(module.proj_seg, s)
        x = s
        keys = project(module.proj_key, key[key_b == b])
        if cfg.cross_attn and keys.shape[0]:
            x = attend(s, keys, module.cross_attn) + (s if cfg.residual else 0)
        if cfg.self_attn:
            context = torch.cat([x[None], project(module.proj_seg, seq[b][seq_mask[b]])])
            x = attend(x, context, module.self_attn)
        out.append(module.mlp(x))
    return torch.stack(out)


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(3, D, generator=g)
    seg_b = torch.tensor([0, 0, 1])
    key = torch.randn(3, D, generator=g)
    key_b = torch.tensor([0, 1, 1])
    seq = torch.randn(2, 7, D, generator=g)
    seq_mask = torch.ones(2, 7, dtype=torch.bool)
    seq_mask[1, 5:] = False  # sample 1 is padded
    return seg, seg_b, key, key_b, seq, seq_mask


def make(preset: str, space: str = "prompt") -> FusionModule:
    torch.manual_seed(1)
    return FusionModule(D, PROMPT, FusionConfig(preset=preset, num_heads=HEADS, space=space)).eval()


@pytest.mark.parametrize("space", ["prompt", "llm"])
@pytest.mark.parametrize("preset", sorted(FUSION_PRESETS))
def test_matches_hand_written_reference(preset, space):
    module = make(preset, space)
    args = inputs()
    with torch.no_grad():
        got = module(*args)
        want = reference(module, *args)
    assert got.shape == (3, PROMPT)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def run(module, **changes):
    seg, seg_b, key, key_b, seq, seq_mask = inputs()
    values = dict(seg=seg, seg_b=seg_b, key=key, key_b=key_b, seq=seq, seq_mask=seq_mask) | changes
    with torch.no_grad():
        return module(values["seg"], values["seg_b"], values["key"], values["key_b"], values["seq"], values["seq_mask"])


def depends_on(module, **changes) -> bool:
    return not torch.allclose(run(module), run(module, **changes))


OTHER_KEYS = dict(key=torch.randn(3, D))
OTHER_SEQ = dict(seq=torch.randn(2, 7, D))


def test_seg_only_in_llm_space_is_lisa_projection():
    module = make("seg_only", space="llm")
    seg = inputs()[0]
    torch.testing.assert_close(run(module), module.mlp(seg).detach())  # Linear(d,d) ReLU Linear(d,C)
    assert module.cross_attn is None and module.self_attn is None and module.proj_seg is None
    assert module.mlp[0].in_features == D and module.mlp[2].out_features == PROMPT


def test_prompt_space_projects_s_and_k_to_prompt_width():
    module = make("keyseg", space="prompt")
    assert module.proj_seg[2].out_features == PROMPT and module.proj_key[2].out_features == PROMPT
    assert module.cross_attn.embed_dim == PROMPT and module.self_attn.embed_dim == PROMPT


@pytest.mark.parametrize(
    "preset, uses_keys, uses_sequence",
    [
        ("seg_only", False, False),
        ("seg_sa", False, True),
        ("sa_only", False, True),
        ("ca_only", True, False),
        ("ca_sa_no_residual", True, True),
        ("keyseg", True, True),
    ],
)
def test_each_switch_changes_the_computation(preset, uses_keys, uses_sequence):
    module = make(preset)
    assert depends_on(module, **OTHER_KEYS) == uses_keys
    assert depends_on(module, **OTHER_SEQ) == uses_sequence


def test_residual_is_the_only_difference():
    with_res, without = make("keyseg"), make("ca_sa_no_residual")
    without.load_state_dict(with_res.state_dict())
    assert not torch.allclose(run(with_res), run(without))


def test_padding_is_ignored():
    module = make("keyseg")
    seq = inputs()[4].clone()
    seq[1, 5:] = 1e3  # padded positions of sample 1
    torch.testing.assert_close(run(module), run(module, seq=seq))


def test_seg_without_key_keeps_s_through_cross_attention():
    module = make("ca_only")
    seg, seg_b, key, key_b, seq, mask = inputs()
    with torch.no_grad():
        out = module(seg, seg_b, key[1:], key_b[1:], seq, mask)  # sample 0 has no [KEY] now
    torch.testing.assert_close(out[:2], module.mlp(module.proj_seg(seg[:2])).detach())


def test_gradients_reach_all_fusion_parameters():
    module = make("keyseg").train()
    seg, seg_b, key, key_b, seq, mask = inputs()
    seg.requires_grad_(True)
    key.requires_grad_(True)
    module(seg, seg_b, key, key_b, seq, mask).sum().backward()
    assert seg.grad.abs().sum() > 0 and key.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_codebook_output_is_the_softmax_mixture_of_its_prompts():
    torch.manual_seed(1)
    module = FusionModule(D, PROMPT, FusionConfig(preset="keyseg", num_heads=HEADS, codebook=5)).eval()
    args = inputs()
    prompts, logits = module.fuse(*args)
    assert prompts.shape == (3, PROMPT) and logits.shape == (3, 5)
    regressed = reference(module, *args)  # the paper's MLP output attends over the codebook
    want = module.logit_scale.exp() * regressed @ module.codebook.T
    assert torch.allclose(logits, want, atol=1e-5)
    assert torch.allclose(prompts, logits.softmax(-1) @ module.codebook, atol=1e-6)
    assert torch.equal(module(*args), prompts)
    with torch.no_grad():  # a confident choice is that prompt itself: S_hat stays where SAM was trained
        module.logit_scale.fill_(10.0)
    confident, chosen = module.fuse(*args)
    assert torch.allclose(confident, module.codebook[chosen.argmax(-1)], atol=1e-4)


def test_paper_fusion_has_no_codebook_and_a_negative_size_is_refused():
    module = make("keyseg")
    assert module.codebook is None and module.fuse(*inputs())[1] is None
    with pytest.raises(ValueError, match="codebook: -1 must be >= 0"):
        FusionConfig(preset="keyseg", codebook=-1)
