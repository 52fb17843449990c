"""Per-leaf step sizes (a ``step_size`` pytree) and γ = 0: Lau et al.'s rescaling check."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import llc

torch = pytest.importorskip("torch")

_EPS = 1e-4


def _relu_mlp(scale: float):
    """A ReLU MLP teacher (4-8-2, float64) with layer 1 scaled by c and layer 2 by 1/c, its
    data, and the MSE loss: the same function of x for every c."""
    g = np.random.default_rng(0)
    n, d_in, hidden, d_out = 2000, 4, 8, 2
    w1, b1 = g.normal(size=(hidden, d_in)) / 2, g.normal(size=hidden) / 4
    w2 = g.normal(size=(d_out, hidden)) / 3
    x = g.uniform(-2, 2, size=(n, d_in))
    y = np.maximum(x @ w1.T + b1, 0) @ w2.T + 0.1 * g.normal(size=(n, d_out))
    params = {"w1": torch.tensor(w1 * scale), "b1": torch.tensor(b1 * scale),
              "w2": torch.tensor(w2 / scale)}

    def loss_fn(p, batch):
        xb, yb = batch
        return ((torch.relu(xb @ p["w1"].T + p["b1"]) @ p["w2"].T - yb) ** 2).mean()

    return loss_fn, params, (torch.tensor(x), torch.tensor(y))


def _run(scale: float, step_size):
    loss_fn, params, data = _relu_mlp(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: low-ess findings are expected
        return llc.estimate(loss_fn, params, data, step_size=step_size, localization=0.0,
                            num_chains=2, num_draws=200, num_burnin=100, batch_size=200,
                            seed=1, progress=False)


def test_rescaling_a_layer_leaves_the_estimate_unchanged_with_per_leaf_steps():
    """Lau et al.'s check: λ̂ is a property of the function, so scaling layer 1 by c and layer
    2 by 1/c must not change it. With γ = 0 and per-leaf steps ε c² / ε / c², SGLD's chain is
    the image of the unscaled chain under the rescaling (the same noise moves c·w), so λ̂ is
    the same to rounding; with one ε for every leaf it is not (or the chains diverge)."""
    reference = _run(1.0, _EPS).llc_mean
    for scale in (1e-2, 1e-1, 1e1, 1e2):
        steps = {"w1": _EPS * scale**2, "b1": _EPS * scale**2, "w2": _EPS / scale**2}
        result = _run(scale, steps)
        assert result.llc_mean == pytest.approx(reference, rel=1e-9), scale
        assert json.loads(result.attrs["step_size_per_leaf"]) == pytest.approx(
            [steps["w1"], steps["b1"], steps["w2"]])
        assert result.attrs["sampler_step_size"] == pytest.approx(max(steps.values()))
        assert result.attrs["localization"] == 0.0
    # the same check with one step for every leaf fails: the estimate depends on the scale
    try:
        scalar = _run(10.0, _EPS).llc_mean
    except RuntimeError:  # every chain diverged
        scalar = np.inf
    assert abs(scalar - reference) > 0.2 * reference


def test_a_number_applies_to_a_subtree_and_step_checks_are_silent():
    loss_fn, params, data = _relu_mlp(1.0)
    nested = {"hidden": {"w1": params["w1"], "b1": params["b1"]}, "out": params["w2"]}

    def nested_loss(p, batch):
        return loss_fn({"w1": p["hidden"]["w1"], "b1": p["hidden"]["b1"], "w2": p["out"]}, batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_leaf = llc.estimate(nested_loss, nested, data, step_size={"hidden": _EPS, "out": _EPS},
                                localization=1.0, num_chains=1, num_draws=50, num_burnin=10,
                                batch_size=200, seed=3, progress=False)
        scalar = llc.estimate(nested_loss, nested, data, step_size=_EPS, localization=1.0,
                              num_chains=1, num_draws=50, num_burnin=10, batch_size=200, seed=3,
                              progress=False)
    assert per_leaf.llc_mean == pytest.approx(scalar.llc_mean, rel=1e-12)
    assert scalar.attrs["step_size_per_leaf"] == "off"
    codes = {finding.code for finding in per_leaf.findings}
    assert not codes & {"step-too-small", "step-too-large"}


@pytest.mark.parametrize("sampler", ["rmsprop_sgld", "sghmc", "mala"])
def test_other_samplers_take_per_leaf_steps(sampler):
    loss_fn, params, data = _relu_mlp(1.0)
    same = {"w1": _EPS, "b1": _EPS, "w2": _EPS}
    runs = []
    for step in (same, _EPS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(llc.estimate(loss_fn, params, data, sampler=sampler, step_size=step,
                                     num_chains=1, num_draws=30, num_burnin=10,
                                     batch_size=2000 if sampler == "mala" else 200, seed=5,
                                     progress=False))
    assert runs[0].llc_mean == pytest.approx(runs[1].llc_mean, rel=1e-9)


def test_per_leaf_steps_bad_input_names_the_place():
    loss_fn, params, data = _relu_mlp(1.0)
    kwargs = dict(num_chains=1, num_draws=5, num_burnin=0, progress=False)
    with pytest.raises(ValueError, match=r"missing \['w2'\]"):
        llc.estimate(loss_fn, params, data, step_size={"w1": 1e-4, "b1": 1e-4}, **kwargs)
    with pytest.raises(ValueError, match=r"step_size\['b1'\].*> 0"):
        llc.estimate(loss_fn, params, data, step_size={"w1": 1e-4, "b1": -1.0, "w2": 1e-4},
                     **kwargs)
    with pytest.raises(ValueError, match="sgnht"):
        llc.estimate(loss_fn, params, data, sampler="sgnht",
                     step_size={"w1": 1e-4, "b1": 1e-4, "w2": 1e-4}, **kwargs)
    with pytest.raises(TypeError, match="step_size"):
        llc.estimate(loss_fn, params, data, step_size=[1e-4, 1e-4, 1e-4], **kwargs)
    with pytest.raises(ValueError, match="coordinates"):
        llc.estimate(loss_fn, params, data, sampler=llc.samplers.SGLD(step_size=np.ones(3)),
                     **kwargs)


def test_jax_per_leaf_steps_follow_jax_leaf_order():
    """JAX flattens dicts in sorted key order: a per-leaf step must land on its own leaf even
    when the dict's insertion order differs."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    g = np.random.default_rng(2)
    x = jnp.asarray(g.normal(size=(500, 3)))
    y = x @ jnp.asarray([1.0, -2.0, 0.5]) + 0.1 * jnp.asarray(g.normal(size=500))
    params = {"w": jnp.asarray([1.0, -2.0, 0.5]), "a_bias": jnp.asarray(0.0)}

    def loss_fn(p, batch):
        xb, yb = batch
        return jnp.mean((xb @ p["w"] + p["a_bias"] - yb) ** 2)

    result = llc.estimate(loss_fn, params, (x, y), step_size={"w": 1e-4, "a_bias": 1e-6},
                          num_chains=1, num_draws=20, num_burnin=5, progress=False)
    # leaves in JAX order: a_bias (1 coordinate) then w (3)
    assert json.loads(result.attrs["step_size_per_leaf"]) == pytest.approx([1e-6, 1e-4])
