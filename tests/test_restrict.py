"""``restrict=``: the weight-refined λ̂ of a component (issue 19, item 1)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import llc
from llc.diagnostics import _Run
from llc.problems import DeepLinearNetwork

# w* is the reduced-rank minimizer, an exact critical point; rank 3 leaves every layer of
# rank 3 (W1: 5×4, W2: 3×5, W3: 4×3)
DLN = DeepLinearNetwork((4, 5, 3, 4), rank=3)
QUICK = dict(step_size=1e-4, batch_size=200, num_chains=2, num_draws=100, num_burnin=50,
             seed=3, progress=False)


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def _layer_lambda(params: dict, layer: str) -> float:
    """λ of the DLN with only ``layer`` moving: the model x ↦ A W B x is linear in W, so the
    loss is quadratic in W with Hessian (B Σ_x Bᵀ) ⊗ (AᵀA), of rank rank(A)·rank(B) (Σ_x has
    full rank): a regular model on the quotient by its flat directions, λ = rank/2."""
    names = ["W1", "W2", "W3"]
    k = names.index(layer)
    after = np.eye(4)
    for name in reversed(names[k + 1:]):
        after = after @ params[name]
    before = np.eye(4)
    for name in names[:k]:
        before = params[name] @ before
    return np.linalg.matrix_rank(after) * np.linalg.matrix_rank(before) / 2


@pytest.mark.statistical
@pytest.mark.parametrize("layer", ["W1", "W2"])
def test_one_layer_of_a_deep_linear_network_has_the_lambda_of_a_linear_model(layer) -> None:
    """Restricted to one layer, the others at w*, λ̂ is rank(A)·rank(B)/2 (4.5 for W2 and 6
    for W1 here, against d_V/2 = 7.5 and 10, and the whole network's 7.5). Tolerance: 4 MCSE
    plus the estimated step bias b̂ (the step's bias is upward)."""
    data, params = DLN.setup(10_000, seed=0)
    expected = _layer_lambda(params, layer)
    assert expected == {"W1": 6.0, "W2": 4.5}[layer]
    result = _quiet(DLN.loss_and_grad, params, data, restrict=layer, step_size=3e-5,
                    batch_size=500, num_chains=4, num_draws=2000, num_burnin=500, seed=0,
                    progress=False)
    assert result.attrs["num_params"] == params[layer].size
    bias = _Run(result).step_bias
    assert bias is not None and bias[1] < 0.1
    tolerance = 4 * result.llc_mcse + bias[0]
    assert abs(result.llc_mean - expected) < tolerance, (result.llc_mean, expected, tolerance)
    assert tolerance < 0.25 * expected  # tight enough to tell d_V/2 and the whole network


def _lower_dimensional(data: tuple, params: dict):
    """The DLN as a model of W2 alone, W1 and W3 constants (NumPy, hand-written gradient)."""
    fixed = {"W1": params["W1"], "W3": params["W3"]}

    def loss_and_grad(sub, batch):
        loss, grads = DLN.loss_and_grad({**fixed, "W2": sub["W2"]}, batch)
        return loss, {"W2": grads["W2"]}

    return loss_and_grad, {"W2": params["W2"]}


def test_a_restricted_estimate_is_the_estimate_of_the_lower_dimensional_model() -> None:
    """Same seed, same numbers: the restricted chains are the chains of the model in which the
    frozen weights are constants (NumPy, sequential, float64: equal to rounding)."""
    data, params = DLN.setup(2_000, seed=1)
    restricted = _quiet(DLN.loss_and_grad, params, data, restrict={"W1": False, "W2": True,
                                                                    "W3": False}, **QUICK)
    loss_fn, sub = _lower_dimensional(data, params)
    lower = _quiet(loss_fn, sub, data, **QUICK)
    np.testing.assert_allclose(restricted.llc_trace, lower.llc_trace, rtol=1e-12)
    np.testing.assert_allclose(restricted.warmup_loss, lower.warmup_loss, rtol=1e-12)
    assert restricted.attrs["num_params"] == lower.attrs["num_params"] == 15
    assert restricted.attrs["num_params_total"] == 47
    assert json.loads(restricted.attrs["restrict"]) == [["W1", 0, 20], ["W2", 15, 15],
                                                         ["W3", 0, 12]]


def test_torch_restricted_chains_match_the_lower_dimensional_model_in_both_chain_methods(
) -> None:
    torch = pytest.importorskip("torch")
    loss_fn, params, data = DLN.in_backend("torch", 2_000, seed=1)
    fixed = {"W1": params["W1"], "W3": params["W3"]}

    def lower_loss(sub, batch):
        return loss_fn({**fixed, "W2": sub["W2"]}, batch)

    lower = _quiet(lower_loss, {"W2": params["W2"]}, data, chain_method="sequential", **QUICK)
    for chain_method in ("sequential", "vectorized"):
        restricted = _quiet(loss_fn, params, data, restrict="W2", chain_method=chain_method,
                            **QUICK)
        assert restricted.attrs["chain_method"] == chain_method
        np.testing.assert_allclose(restricted.llc_trace, lower.llc_trace, rtol=1e-9)
    before = {name: value.clone() for name, value in params.items()}
    _quiet(loss_fn, params, data, restrict="W2", **QUICK)
    for name in params:  # the user's tensors are untouched
        assert torch.equal(params[name], before[name])


def test_every_form_of_restrict_selects_the_same_coordinates() -> None:
    """Patterns, a mask pytree (a bool per leaf, or per element), a callable: the same run; a
    per-element mask moves only its elements, the others stay exactly at w* at every call."""
    data, params = DLN.setup(2_000, seed=1)
    forms = ["W2", ["W2"], "W[2]", {"W1": False, "W2": True, "W3": False},
             {"W1": np.zeros((5, 4), bool), "W2": np.ones((3, 5), bool), "W3": False},
             lambda name, array: name == "W2"]
    traces = [_quiet(DLN.loss_and_grad, params, data, restrict=form, **QUICK).llc_trace
              for form in forms]
    for trace in traces[1:]:
        np.testing.assert_array_equal(trace, traces[0])

    head = np.zeros((3, 5), bool)
    head[0] = True  # one row of W2: 5 coordinates
    seen = []

    def recording(p, batch):
        seen.append({name: value.copy() for name, value in p.items()})
        return DLN.loss_and_grad(p, batch)

    result = _quiet(recording, params, data,
                    restrict={"W1": False, "W2": head, "W3": False}, **QUICK)
    assert result.attrs["num_params"] == 5
    moved = np.zeros((3, 5), bool)
    for p in seen:
        np.testing.assert_array_equal(p["W1"], params["W1"])
        np.testing.assert_array_equal(p["W3"], params["W3"])
        np.testing.assert_array_equal(p["W2"][1:], params["W2"][1:])
        moved |= p["W2"] != params["W2"]
    assert moved[0].all() and not moved[1:].any()


def test_bad_restrictions_are_named() -> None:
    data, params = DLN.setup(500, seed=1)
    base = dict(step_size=1e-4, num_draws=10, num_burnin=5, progress=False)
    with pytest.raises(ValueError, match="match no parameter.*W1"):
        llc.estimate(DLN.loss_and_grad, params, data, restrict="encoder.*", **base)
    with pytest.raises(ValueError, match="selects no coordinate"):
        llc.estimate(DLN.loss_and_grad, params, data, restrict=False, **base)
    with pytest.raises(ValueError, match=r"`restrict` must have the keys.*missing \['W3'\]"):
        llc.estimate(DLN.loss_and_grad, params, data, restrict={"W1": True, "W2": True},
                     **base)
    with pytest.raises(ValueError, match=r"'W2' has shape \(5, 3\)"):
        llc.estimate(DLN.loss_and_grad, params, data,
                     restrict={"W1": False, "W2": np.ones((5, 3), bool), "W3": False}, **base)
    with pytest.raises(TypeError, match="'W2' must be a bool or a boolean array"):
        llc.estimate(DLN.loss_and_grad, params, data,
                     restrict={"W1": False, "W2": np.ones((3, 5)), "W3": False}, **base)


def test_observables_refuse_a_restricted_estimate() -> None:
    data, params = DLN.setup(500, seed=1)
    result = _quiet(DLN.loss_and_grad, params, data, restrict="W2", keep_params_every=5,
                    **{**QUICK, "batch_size": 100})
    assert result.param_draws.shape[-1] == 15  # the sampled coordinates
    with pytest.raises(ValueError, match="restricted estimate"):
        llc.observables(result, lambda p, batch: np.zeros(len(batch[0])), params, data)


def _linear_model(active: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free data of y = W₀x with x ~ N(0, I₄) on its first ``active`` coordinates and
    0 on the rest."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10_000, 4))
    x[:, active:] = 0.0
    return x, x @ _TEACHER.T


_TEACHER = np.random.default_rng(0).normal(size=(3, 4))


def _linear_loss_and_grad(p, batch):
    x, y = batch
    residual = x @ p["W"].T - y
    return 0.5 * np.mean(np.sum(residual**2, axis=1)), {"W": residual.T @ x / len(x)}


@pytest.mark.statistical
def test_data_refined_lambda_counts_the_directions_the_data_sees() -> None:
    """The same model and w* = W₀ (a minimum on every subset: the data are noise-free), nβ
    fixed, on two data distributions: inputs on all 4 coordinates (λ = 3·4/2 = 6) and on 2 of
    them (the loss is flat along the other columns of W: λ = 3·2/2 = 3). With both
    refinements at once, column 3 of W on the second data set is exactly flat (λ̂ = 0) and on
    the first a regular block of 3 (λ = 1.5). Tolerance: 4 MCSE plus the estimated step bias."""
    params = {"W": _TEACHER.copy()}
    settings = dict(step_size=5e-5, nbeta=10_000 / np.log(10_000), batch_size=500,
                    num_chains=4, num_draws=2000, num_burnin=500, seed=0, progress=False)
    column3 = {"W": np.arange(12).reshape(3, 4) % 4 == 3}
    cases = [(_linear_model(4, 1), None, 6.0), (_linear_model(2, 2), None, 3.0),
             (_linear_model(4, 1), column3, 1.5)]
    for data, restrict, expected in cases:
        result = _quiet(_linear_loss_and_grad, params, data, restrict=restrict, **settings)
        bias = _Run(result).step_bias
        assert bias is not None and bias[1] < 0.05
        tolerance = 4 * result.llc_mcse + bias[0]
        assert abs(result.llc_mean - expected) < tolerance, (expected, result.llc_mean, tolerance)
        assert tolerance < 0.25 * expected  # far from the other cases' λ (×2 apart)
    flat = _quiet(_linear_loss_and_grad, params, _linear_model(2, 2), restrict=column3,
                  **settings)
    assert flat.llc_mean == 0.0 and np.all(flat.llc_trace == 0.0)


def test_restricted_chains_are_the_lower_dimensional_models_in_every_backend(backend64) -> None:
    """Every adapter, float64, both chain methods where the adapter has them: a restriction to
    W2 runs the chains of the model of W2 alone (W1 and W3 constants), to rounding."""
    if backend64.name == "numpy":
        pytest.skip("NumPy: tests the hand-written gradient above")
    loss_fn, params, data = DLN.in_backend(backend64.name, 2_000, seed=1,
                                           device=backend64.device)
    fixed = {"W1": params["W1"], "W3": params["W3"]}

    def lower_loss(sub, batch):
        return loss_fn({**fixed, "W2": sub["W2"]}, batch)

    methods = ["sequential"] + (["vectorized"] if backend64.backend.chain_transforms else [])
    for chain_method in methods:
        lower = _quiet(lower_loss, {"W2": params["W2"]}, data, chain_method=chain_method,
                       **QUICK)
        restricted = _quiet(loss_fn, params, data, restrict="W2", chain_method=chain_method,
                            **QUICK)
        assert restricted.attrs["num_params"] == 15
        np.testing.assert_allclose(restricted.llc_trace, lower.llc_trace, rtol=1e-9)
