"""Bad input gets a clear error naming the argument; user state is never modified."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

import llc

from _models import (FailingChains, linear_loss, linear_loss_and_grad, linear_problem,
                     skip_if_compiled)

SHORT = dict(num_chains=2, num_draws=30, num_burnin=10, step_size=1e-4, progress=False)


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"step_size": 0.0}, ValueError, "`step_size`"),
        ({"step_size": -1e-3}, ValueError, "`step_size`"),
        ({"step_size": float("nan")}, ValueError, "`step_size`"),
        ({"num_chains": 0}, ValueError, "`num_chains`"),
        ({"num_chains": 2.5}, TypeError, "`num_chains`"),
        ({"nbeta": 0.0}, ValueError, "`nbeta`"),
        ({"nbeta": -5.0}, ValueError, "`nbeta`"),
        ({"localization": -1.0}, ValueError, "`localization`"),
        ({"num_draws": 0}, ValueError, "`num_draws`"),
        ({"num_burnin": -1}, ValueError, "`num_burnin`"),
        ({"thin": 0}, ValueError, "`thin`"),
        ({"batch_size": 10_000}, ValueError, "`batch_size`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"sampler": "hmc"}, ValueError, "`sampler`"),
        ({"sampler": object()}, TypeError, "`sampler`"),
        ({"seed": 1.5}, TypeError, "`seed`"),
        ({"baseline": "none"}, ValueError, "`baseline`"),
        ({"num_data": 7}, ValueError, "`num_data`"),
    ],
)
def test_bad_settings_name_the_argument(backend64, override, error, match) -> None:
    loss_fn, params, data = linear_problem(backend64)
    with pytest.raises(error, match=match):
        llc.estimate(loss_fn, params, data, **{**SHORT, **override})


def test_bad_params(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    with pytest.raises(ValueError, match="`params` is empty"):
        llc.estimate(loss_fn, {}, data, **SHORT)
    integer = backend64.backend.from_numpy(np.ones((2, 3), dtype=np.int64), device=backend64.device)
    with pytest.raises(TypeError, match=r"`params` leaf \['weight'\] has dtype"):
        llc.estimate(loss_fn, {"weight": integer}, data, **SHORT)
    with pytest.raises(TypeError, match="`params` must be a pytree"):
        llc.estimate(loss_fn, {"weight": [[1.0, 2.0]]}, data, **SHORT)


def test_mixed_frameworks_in_params() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="`params` mixes frameworks"):
        llc.estimate(linear_loss, {"a": torch.ones(2), "b": np.ones(2)}, (np.ones((4, 1)),),
                     **SHORT)


def test_bad_data(backend64) -> None:
    loss_fn, params, (x, y) = linear_problem(backend64)
    x_np, y_np = backend64.to_numpy((x, y))
    with pytest.raises(ValueError, match="share the leading dimension"):
        llc.estimate(loss_fn, params, (x_np, y_np[:-1]), **SHORT)
    with pytest.raises(ValueError, match="`data` is empty"):
        llc.estimate(loss_fn, params, (x_np[:0], y_np[:0]), **SHORT)
    with pytest.raises(TypeError, match="single array"):
        llc.estimate(loss_fn, params, x_np, **SHORT)
    with pytest.raises(ValueError, match="`data` is an empty tuple"):
        llc.estimate(loss_fn, params, (), **SHORT)
    with pytest.raises(TypeError, match="one-shot iterator"):
        llc.estimate(loss_fn, params, iter([(x, y)]), num_data=512, **SHORT)
    with pytest.raises(ValueError, match="`num_data` is required"):
        llc.estimate(loss_fn, params, [(x, y)], **SHORT)
    with pytest.raises(TypeError, match=r"`data\[1\]` must be an array"):
        llc.estimate(loss_fn, params, (x_np, "labels"), **SHORT)
    bad = x_np.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`data\[0\]` contains NaN"):
        llc.estimate(loss_fn, params, (bad, y_np), **SHORT)
    # the same precise message for the framework's own arrays
    framework_bad = backend64.asarray(bad)
    if not isinstance(framework_bad, np.ndarray):
        with pytest.raises(ValueError, match=r"`data\[0\]` contains NaN"):
            llc.estimate(loss_fn, params, (framework_bad, y), **SHORT)
    y_inf = y_np.copy()
    y_inf[0] = np.inf
    with pytest.raises(ValueError, match=r"`data\[1\]` contains NaN or infinite"):
        llc.estimate(loss_fn, params, (x, backend64.asarray(y_inf)), **SHORT)
    # a list [x, y] is an iterable of two batches: the error says what was probably meant
    with pytest.raises(ValueError, match=r"did you mean a tuple \(x, y\)\?"):
        llc.estimate(loss_fn, params, [x, y], **SHORT)


def test_non_finite_loss_at_w_star(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    weight = backend64.to_numpy(params)["weight"]
    weight[0, 0] = np.inf
    with pytest.raises(ValueError, match="loss at w"):
        llc.estimate(loss_fn, backend64.asarray({"weight": weight}), data, **SHORT)


def test_loss_fn_must_return_a_scalar() -> None:
    torch = pytest.importorskip("torch")
    data = (torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64))
    params = {"weight": torch.zeros(2, 3, dtype=torch.float64)}
    per_sample = lambda p, b: ((b[0] @ p["weight"].T - b[1]) ** 2).sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="scalar loss"):
        llc.estimate(per_sample, params, data, **SHORT)
    detached = lambda p, b: linear_loss({"weight": p["weight"].detach()}, b)  # noqa: E731
    with pytest.raises(TypeError, match="not differentiable"):
        llc.estimate(detached, params, data, **SHORT)
    closed_over = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    unused = lambda p, b: linear_loss({"weight": closed_over}, b) + 0 * p["weight"].sum().detach()  # noqa: E731
    with pytest.raises(TypeError, match="does not use the `params`"):
        llc.estimate(unused, params, data, **SHORT)
    with pytest.raises(TypeError, match="`loss_fn` must return a torch scalar"):
        llc.estimate(lambda p, b: 1.0, params, data, **SHORT)
    with pytest.raises(TypeError, match="`loss_fn` must be callable"):
        llc.estimate("mse", params, data, **SHORT)


def test_numpy_loss_fn_must_return_loss_and_grads() -> None:
    (x, y) = np.ones((8, 3)), np.ones((8, 2))
    params = {"weight": np.zeros((2, 3))}
    with pytest.raises(TypeError, match=r"must return \(loss, grads\)"):
        llc.estimate(linear_loss, params, (x, y), **SHORT)
    wrong = lambda p, b: (linear_loss(p, b), {"weight": np.zeros(3)})  # noqa: E731
    with pytest.raises(ValueError, match="grads whose structure or shapes differ"):
        llc.estimate(wrong, params, (x, y), **SHORT)


def test_user_state_is_never_modified(backend) -> None:
    """Params, data (bitwise) and the global RNGs of numpy, random and torch are untouched."""
    loss_fn, params, data = linear_problem(backend)
    params_before = backend.to_numpy(params)
    data_before = backend.to_numpy(data)
    np.random.seed(123)
    random.seed(123)
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    torch_state = None
    if backend.name == "torch":
        import torch

        torch.manual_seed(123)
        torch_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    llc.estimate(loss_fn, params, data, **SHORT)

    for key, value in backend.to_numpy(params).items():
        np.testing.assert_array_equal(value, params_before[key])
    for now, before in zip(backend.to_numpy(data), data_before):
        np.testing.assert_array_equal(now, before)
    assert np.all(np.random.get_state()[1] == numpy_state[1])
    assert random.getstate() == python_state
    if torch_state is not None:
        assert torch.equal(torch.get_rng_state(), torch_state)
        if cuda_state is not None:
            for now, before in zip(torch.cuda.get_rng_state_all(), cuda_state):
                assert torch.equal(now, before)


def test_numpy_loss_fn_cannot_write_into_the_sampler_state() -> None:
    (x, y), = [(np.ones((8, 3)), np.ones((8, 2)))]

    def writes(params, batch):
        params["weight"][0, 0] = 1.0
        return linear_loss_and_grad(params, batch)

    with pytest.raises(ValueError, match="read-only"):
        llc.estimate(writes, {"weight": np.zeros((2, 3))}, (x, y), **SHORT)


def test_a_diverging_chain_is_left_out_with_a_warning(backend64) -> None:
    skip_if_compiled(backend64)
    loss_fn, params, data = linear_problem(backend64)
    flaky = FailingChains(loss_fn, 3, {1: (14, "nan")},  # chain 1 turns NaN at step 14
                          initial_calls=4)  # the probe twice, L_n(w*) in 2 batches of 256
    with pytest.warns(llc.ChainFailureWarning, match="chain 1 diverged at step 14"):
        result = llc.estimate(flaky, params, data, num_chains=3, num_draws=30, num_burnin=10,
                              step_size=1e-4, progress=False, seed=1, mala_every=None,
                              baseline="full")
    assert list(result.failed_chains) == [False, True, False]
    assert result.sample_stats["diverging"][1, 4:].all()
    assert not result.sample_stats["diverging"][1, :4].any()
    assert not result.sample_stats["diverging"][[0, 2]].any()
    assert np.isnan(result.llc_chains[1])
    assert result.llc_mean == pytest.approx(result.llc_trace[[0, 2]].mean())
    assert np.isfinite(result.llc_mean)


def test_a_raising_chain_keeps_its_draws_and_the_others_finish(backend64) -> None:
    skip_if_compiled(backend64)
    loss_fn, params, data = linear_problem(backend64)
    flaky = FailingChains(loss_fn, 2, {0: (25, "raise")},
                          initial_calls=4)  # the probe twice, L_n(w*) in 2 batches of 256
    with pytest.warns(llc.ChainFailureWarning, match="chain 0 raised ValueError: boom"):
        result = llc.estimate(flaky, params, data, num_chains=2, num_draws=30, num_burnin=10,
                              step_size=1e-4, progress=False, seed=1, mala_every=None,
                              baseline="full")
    assert list(result.failed_chains) == [True, False]
    assert np.isfinite(result.loss_trace[0, :15]).all()
    assert np.isnan(result.loss_trace[0, 15:]).all()
    assert np.isfinite(result.loss_trace[1]).all()
    assert result.llc_mean == pytest.approx(result.llc_trace[1].mean())


def test_every_chain_diverging_raises(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    with pytest.raises(llc.AllChainsFailedError, match="every chain failed.*lower `step_size`"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llc.estimate(loss_fn, params, data, num_chains=2, num_draws=300, num_burnin=10,
                         step_size=100.0, progress=False)
