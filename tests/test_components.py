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


def _replace(tree, changes: dict, prefix: str = ""):
    """``tree`` (nested dicts) with the leaves named in ``changes`` (dotted names) replaced by
    ``changes[name](leaf)``."""
    if hasattr(tree, "items"):
        return {key: _replace(value, changes, f"{prefix}{key}.") for key, value in tree.items()}
    name = prefix.rstrip(".")
    return changes[name](tree) if name in changes else tree


def _check_heads_by_their_effect(loss_fn, params, batch, heads, output_of, as_array,
                                 replace=_replace) -> None:
    """The test of ``test_a_heads_mask_is_exactly_what_only_that_head_uses`` through the loss
    (a function of the output), for any framework: ``as_array(mask_or_noise, like)``."""
    rng = np.random.default_rng(1)
    reference = float(loss_fn(params, batch))
    for name, head in heads.items():
        output = output_of(head)

        def cut_output(leaf, mask=head.masks[output]):
            return leaf * as_array(~mask, leaf)

        def perturbed(mask):
            def change(leaf):
                noise = rng.normal(size=mask.shape) * mask
                return leaf + as_array(noise, leaf)
            return change

        others = {key: perturbed(mask) for key, mask in head.masks.items() if key != output}
        cut = replace(params, {output: cut_output})
        cut_and_changed = replace(cut, others)
        assert float(loss_fn(cut_and_changed, batch)) == pytest.approx(
            float(loss_fn(cut, batch)), rel=1e-10, abs=1e-12), name
        assert float(loss_fn(replace(params, others), batch)) != pytest.approx(
            reference, rel=1e-6), name


def test_flax_attention_heads() -> None:
    pytest.importorskip("flax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from llc.backends.jax import attention_heads as flax_heads
    from llc.backends.jax import from_flax

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(x)

    model = Model()
    x = jax.random.normal(jax.random.key(0), (3, 5, 8), dtype=jnp.float64)
    variables = model.init(jax.random.key(1), x)
    loss_fn, params = from_flax(model.apply, variables,
                                lambda out, y: jnp.mean((out - y) ** 2))
    batch = (x, jnp.zeros((3, 5, 8)))
    heads = flax_heads(params)
    prefix = "MultiHeadDotProductAttention_0."
    assert sorted(heads) == [f"{prefix}head0", f"{prefix}head1"]
    assert heads[f"{prefix}head0"].size == 3 * (8 * 4 + 4) + 4 * 8
    _check_heads_by_their_effect(loss_fn, params, batch, heads,
                                 lambda head: f"{prefix}out.kernel",
                                 lambda array, leaf: jnp.asarray(array, dtype=leaf.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, batch, restrict=heads[f"{prefix}head1"],
                              step_size=1e-5, num_chains=1, num_draws=5, num_burnin=0,
                              batch_size=3, progress=False)
    assert result.attrs["num_params"] == heads[f"{prefix}head1"].size
    with pytest.raises(ValueError, match="no Flax MultiHeadDotProductAttention"):
        flax_heads({"Dense_0": {"kernel": jnp.ones((2, 2))}})


def test_keras_attention_heads() -> None:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    from llc.backends.tensorflow import attention_heads as keras_heads
    from llc.backends.tensorflow import from_keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    outputs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(
        inputs, inputs)
    model = keras.Model(inputs, outputs)
    loss_fn, params = from_keras(model, keras.losses.MeanSquaredError())
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    batch = (tf.constant(x), tf.zeros((3, 5, 8)))
    heads = keras_heads(model)
    assert sorted(heads) == ["attention.head0", "attention.head1"]
    assert heads["attention.head0"].size == 3 * (8 * 4 + 4) + 4 * 8
    _check_heads_by_their_effect(
        loss_fn, params, batch, heads, lambda head: "attention/attention_output/kernel",
        lambda array, leaf: tf.constant(np.asarray(array), dtype=leaf.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, batch, restrict=heads["attention.head0"],
                              step_size=1e-5, num_chains=1, num_draws=5, num_burnin=0,
                              batch_size=3, progress=False)
    assert result.attrs["num_params"] == heads["attention.head0"].size
    with pytest.raises(ValueError, match="no keras.layers.MultiHeadAttention"):
        keras_heads(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))


def test_equinox_attention_heads() -> None:
    eqx = pytest.importorskip("equinox")
    import jax
    import jax.numpy as jnp

    from llc.backends.jax import attention_heads as jax_heads
    from llc.backends.jax import from_equinox

    class Model(eqx.Module):
        attention: eqx.nn.MultiheadAttention

        def __call__(self, x):
            return self.attention(x, x, x)

    model = Model(eqx.nn.MultiheadAttention(2, 8, use_query_bias=True, use_key_bias=True,
                                            use_value_bias=True, use_output_bias=True,
                                            key=jax.random.key(0), dtype=jnp.float64))
    loss_fn, params = from_equinox(model, lambda out, y: jnp.mean((out - y) ** 2))
    x = jax.random.normal(jax.random.key(1), (3, 5, 8), dtype=jnp.float64)
    batch = (x, jnp.zeros((3, 5, 8)))
    heads = jax_heads(params)
    assert sorted(heads) == ["attention0.head0", "attention0.head1"]
    assert heads["attention0.head0"].size == 3 * (8 * 4 + 4) + 8 * 4
    output = next(str(index) for index, leaf in enumerate(jax.tree_util.tree_leaves(params))
                  if leaf is params.attention.output_proj.weight)  # named by position

    def by_position(tree, changes):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return jax.tree_util.tree_unflatten(
            treedef, [changes[str(i)](leaf) if str(i) in changes else leaf
                      for i, leaf in enumerate(leaves)])

    _check_heads_by_their_effect(loss_fn, params, batch, heads, lambda head: output,
                                 lambda array, leaf: jnp.asarray(array, dtype=leaf.dtype),
                                 replace=by_position)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, batch, restrict=heads["attention0.head0"],
                              step_size=1e-5, num_chains=1, num_draws=5, num_burnin=0,
                              batch_size=3, progress=False)
    assert result.attrs["num_params"] == heads["attention0.head0"].size
