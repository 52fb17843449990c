"""JAX specifics: the Flax and Equinox one-liners and the on-device shuffle."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import llc

jax = pytest.importorskip("jax")
import jax.numpy as jnp

from llc.backends.jax import _shuffle, from_equinox, from_flax

SHORT = dict(num_chains=2, num_draws=40, num_burnin=10, step_size=1e-4, progress=False,
             batch_size=64)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(256, 4)))
    y = jnp.asarray(rng.integers(0, 3, size=256))
    return x, y


def _cross_entropy(logits, labels):
    return jnp.mean(jax.nn.logsumexp(logits, axis=1)
                    - jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0])


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def test_from_flax_matches_the_model_and_leaves_the_variables_alone() -> None:
    nn = pytest.importorskip("flax.linen")

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.tanh(nn.Dense(8)(x)))

    model = MLP()
    x, y = _data()
    variables = model.init(jax.random.key(0), x)
    before = jax.tree_util.tree_map(np.array, variables)
    loss_fn, params = from_flax(model.apply, variables, _cross_entropy)
    assert params is variables["params"]
    expected = _cross_entropy(model.apply(variables, x), y)
    np.testing.assert_allclose(loss_fn(params, (x, y)), expected, rtol=1e-12)
    result = _quiet(loss_fn, params, (x, y), **SHORT)
    assert np.isfinite(result.llc_mean) and result.attrs["num_params"] == 4 * 8 + 8 + 8 * 3 + 3
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, variables)
    with pytest.raises(ValueError, match="`variables` must be a mapping with a 'params'"):
        from_flax(model.apply, {"batch_stats": {}}, _cross_entropy)
    with pytest.raises(TypeError, match="`apply_fn` must be callable"):
        from_flax(None, variables, _cross_entropy)


def test_from_equinox_samples_only_the_floating_arrays() -> None:
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(4, 3, width_size=8, depth=1, activation=jnp.tanh,
                       key=jax.random.key(1))
    x, y = _data(1)
    loss_fn, params = from_equinox(model, _cross_entropy)
    expected = _cross_entropy(jax.vmap(model)(x), y)
    np.testing.assert_allclose(loss_fn(params, (x, y)), expected, rtol=1e-12)
    before = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(model)]
    result = _quiet(loss_fn, params, (x, y), **SHORT)
    assert np.isfinite(result.llc_mean) and result.attrs["num_params"] == 4 * 8 + 8 + 8 * 3 + 3
    for old, new in zip(before, jax.tree_util.tree_leaves(model), strict=True):
        np.testing.assert_array_equal(old, new)
    batched_loss, _ = from_equinox(model, _cross_entropy, batched=True)
    with pytest.raises(TypeError, match="`module` must be an equinox.Module"):
        from_equinox(lambda v: v, _cross_entropy)
    with pytest.raises(TypeError):  # eqx.nn.MLP acts on one example: a batch is a shape error
        batched_loss(params, (x, y))


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 4097])
def test_shuffle_is_a_permutation(n) -> None:
    order = np.asarray(_shuffle(jax.random.key(n), n))
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_the_data_order_does_not_depend_on_x64() -> None:
    """Batches (with and without replacement) are the same draws whether or not
    ``jax_enable_x64`` is set: a float32 model's chains must not change with a global flag
    that another part of the program (a float64 model) turned on."""
    from llc.backends.jax import backend

    like = jnp.zeros(3, jnp.float32)
    key = jax.random.key(7)
    draws = {}
    for x64 in (False, True):
        with jax.enable_x64(x64):
            draws[x64] = (np.asarray(backend.permutation(key, 1000, like)),
                          np.asarray(backend.integers(key, 1000, 64, like)),
                          np.asarray(backend.normal(key, like)))
    for without, with_x64 in zip(draws[False], draws[True]):
        np.testing.assert_array_equal(without, with_x64)


def test_shuffle_is_uniform() -> None:
    """All 24 orders of 4 items, 24 000 draws: a chi-square test, and each item uniform over
    the positions (fixed seed; without the random words every draw is one order)."""
    from scipy.stats import chisquare

    keys = jax.random.split(jax.random.key(0), 24_000)
    orders = np.asarray(jax.jit(jax.vmap(lambda key: _shuffle(key, 4)))(keys))
    counts = collections.Counter(map(tuple, orders.tolist()))
    assert len(counts) == 24
    assert chisquare(list(counts.values())).pvalue > 1e-3
    positions = np.stack([np.bincount(orders[:, i], minlength=4) for i in range(4)])
    np.testing.assert_allclose(positions / 24_000, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / 24_000))


# ---- language-model batches ----------------------------------------------------------------

def _token_dicts(length: int = 7, vocab: int = 10):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(48, length))
    mask = np.ones_like(tokens)
    mask[::3, -2:] = 0
    return [{"input_ids": jnp.asarray(tokens[i:i + 16]),
             "attention_mask": jnp.asarray(mask[i:i + 16])} for i in range(0, 48, 16)]


def _masked_next_token_nll(logits, batch) -> float:
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    targets = np.asarray(batch["input_ids"])[:, 1:]
    weights = np.asarray(batch["attention_mask"])[:, 1:]
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return float(-(picked * weights).sum() / weights.sum())


def test_flax_and_equinox_take_dict_batches_with_next_token() -> None:
    nn = pytest.importorskip("flax.linen")
    eqx = pytest.importorskip("equinox")
    from llc.backends.jax import causal_lm_loss, next_token

    batches = _token_dicts()

    class Bigram(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            return nn.Dense(10)(nn.Embed(10, 8)(tokens))

    model = Bigram()
    variables = model.init(jax.random.PRNGKey(0), batches[0]["input_ids"][:, :-1])
    loss_fn, params = from_flax(model.apply, variables, causal_lm_loss,
                                unpack=next_token(mask_argument=None))
    logits = model.apply(variables, batches[0]["input_ids"][:, :-1])
    assert float(loss_fn(params, batches[0])) == pytest.approx(
        _masked_next_token_nll(logits, batches[0]), rel=1e-5)
    losses, weights = causal_lm_loss(logits, (batches[0]["input_ids"][:, 1:],
                                              batches[0]["attention_mask"][:, 1:]),
                                     reduction="none")
    assert losses.shape == weights.shape == (16, 6)
    assert float(jnp.sum(losses * weights) / jnp.sum(weights)) == pytest.approx(
        _masked_next_token_nll(logits, batches[0]), rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, batches, num_data=48, step_size=1e-5,
                              num_chains=2, num_draws=10, num_burnin=2, progress=False)
    assert np.isfinite(result.llc_trace).all()
    with pytest.raises(TypeError, match="unpack=next_token"):
        from_flax(model.apply, variables, causal_lm_loss)[0](params, batches[0])

    class Unigram(eqx.Module):  # one token in, logits out; vmapped over batch and position
        embed: eqx.nn.Embedding

        def __call__(self, tokens):
            return jax.vmap(self.embed)(tokens)

    module = Unigram(eqx.nn.Embedding(10, 10, key=jax.random.PRNGKey(1)))
    loss_fn, params = from_equinox(module, causal_lm_loss, unpack=next_token(mask_argument=None))
    logits = jax.vmap(module)(batches[1]["input_ids"][:, :-1])
    assert float(loss_fn(params, batches[1])) == pytest.approx(
        _masked_next_token_nll(logits, batches[1]), rel=1e-5)
