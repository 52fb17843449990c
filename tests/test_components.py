"""Component helpers for ``restrict=`` (issue 19, item 2): per-head masks of attention.

A head's mask must hold exactly the parameters only that head uses. Checked by what they do:
with the head's slice of the output projection zeroed, the head is cut from the output, so
any change to the rest of its mask (its query, key and value slices) leaves the output
unchanged — which fails if a slice belonged to another head — while the same change with the
output projection intact changes the output (the slices are live).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llc

torch = pytest.importorskip("torch")
from llc.backends.torch import attention_heads, from_module  # noqa: E402


class SelfAttention(torch.nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True, **kwargs)

    def forward(self, x):
        key = x if self.attn.kdim == 8 else x[..., :self.attn.kdim]
        value = x if self.attn.vdim == 8 else x[..., :self.attn.vdim]
        return self.attn(x, key, value, need_weights=False)[0]


class HandWritten(torch.nn.Module):
    """Multi-head self-attention with separate or fused projections."""

    def __init__(self, fused: bool, heads: int = 2, width: int = 8) -> None:
        super().__init__()
        self.heads, self.width, self.fused = heads, width, fused
        if fused:
            self.qkv = torch.nn.Linear(width, 3 * width)
        else:
            self.q, self.k, self.v = (torch.nn.Linear(width, width) for _ in range(3))
        self.o = torch.nn.Linear(width, width)

    def forward(self, x):
        if self.fused:
            q, k, v = self.qkv(x).split(self.width, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        batch, length, _ = x.shape
        split = [t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v)]
        mixed = torch.nn.functional.scaled_dot_product_attention(*split)
        return self.o(mixed.transpose(1, 2).reshape(batch, length, self.width))


class Block(torch.nn.Module):
    """A hand-written attention inside a larger model (names with a prefix)."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(8, 8)
        self.attn = HandWritten(fused)

    def forward(self, x):
        return self.attn(self.embed(x))


LAYOUTS = {
    "multihead-fused": (lambda: SelfAttention(), {}, "attn.out_proj.weight", "attn"),
    "multihead-separate-kv-bias": (lambda: SelfAttention(kdim=6, vdim=5, add_bias_kv=True), {},
                                   "attn.out_proj.weight", "attn"),
    "hand-written-qkv": (lambda: Block(fused=False),
                         dict(num_heads=2, q="attn.q", k="attn.k", v="attn.v", o="attn.o"),
                         "attn.o.weight", "attn"),
    "hand-written-fused": (lambda: Block(fused=True),
                           dict(num_heads=2, qkv="attn.qkv", o="attn.o"), "attn.o.weight",
                           "attn"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_heads_mask_is_exactly_what_only_that_head_uses(layout) -> None:
    build, options, output, prefix = LAYOUTS[layout]
    torch.manual_seed(0)
    model = build().double().eval()
    heads = attention_heads(model, **options)
    assert sorted(heads) == [f"{prefix}.head0", f"{prefix}.head1"]
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    x = torch.randn(3, 5, 8, dtype=torch.float64)

    def run(values):
        return torch.func.functional_call(model, values, (x,))

    generator = torch.Generator().manual_seed(1)
    for name, head in heads.items():
        cut = dict(params)
        cut[output] = params[output].masked_fill(torch.as_tensor(head.masks[output]), 0.0)
        changed_cut, changed_live = dict(cut), dict(params)
        for key, mask in head.masks.items():
            if key == output:
                continue
            noise = torch.randn(params[key].shape, generator=generator, dtype=torch.float64)
            where = torch.as_tensor(mask)
            changed_cut[key] = torch.where(where, cut[key] + noise, cut[key])
            changed_live[key] = torch.where(where, params[key] + noise, params[key])
        torch.testing.assert_close(run(changed_cut), run(cut), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(run(changed_live), run(params)), name
    first, second = heads[f"{prefix}.head0"], heads[f"{prefix}.head1"]
    for key in first.masks:  # disjoint, and together every projection coordinate
        assert not (first.masks[key] & second.masks[key]).any()
    assert (first | second).size == first.size + second.size


def test_estimate_restricted_to_one_head() -> None:
    torch.manual_seed(0)
    model = SelfAttention().double().eval()
    loss_fn, params = from_module(model, torch.nn.functional.mse_loss)
    x = torch.randn(200, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    heads = attention_heads(model)
    head = heads["attn.head0"]
    assert head.size == 3 * 4 * 8 + 3 * 4 + 8 * 4  # q, k, v rows and biases; o columns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, (x, y), restrict=head, step_size=1e-5,
                              num_chains=2, num_draws=50, num_burnin=20, batch_size=50,
                              progress=False)
    assert result.attrs["num_params"] == head.size
    assert np.isfinite(result.llc_mean)
    both = llc.estimate(loss_fn, params, (x, y), restrict=heads["attn.head0"]
                        | heads["attn.head1"], step_size=1e-5, num_chains=1, num_draws=5,
                        num_burnin=0, batch_size=50, progress=False)
    assert both.attrs["num_params"] == 2 * head.size


def test_attention_heads_errors() -> None:
    with pytest.raises(ValueError, match="no torch.nn.MultiheadAttention"):
        attention_heads(torch.nn.Linear(3, 3))
    model = Block(fused=False)
    with pytest.raises(ValueError, match="`num_heads`"):
        attention_heads(model, q="attn.q", k="attn.k", v="attn.v", o="attn.o")
    with pytest.raises(ValueError, match="output projection `o`"):
        attention_heads(model, num_heads=2, q="attn.q", k="attn.k", v="attn.v")
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        attention_heads(model, num_heads=2, q="attn", k="attn.k", v="attn.v", o="attn.o")
    with pytest.raises(ValueError, match="do not split"):
        attention_heads(model, num_heads=3, q="attn.q", k="attn.k", v="attn.v", o="attn.o")
    other = llc.ComponentMask({"attn.q.weight": np.ones((4, 4), bool)})
    with pytest.raises(ValueError, match="has shape"):
        other("attn.q.weight", np.zeros((8, 8)))
