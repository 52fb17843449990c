"""Exact behaviour of llc.estimate in every backend: the update rule, seeds, scaling, export."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr

import llc
from llc.posterior import LocalizedPosterior
from llc.samplers import SGLD

from _models import linear_problem

SHORT = dict(num_chains=2, num_draws=50, num_burnin=20, step_size=1e-4, progress=False)


def test_sgld_step_is_the_update_rule(backend) -> None:
    """One step equals w − (ε/2)(nβ ∇L_B(w) + γ (w − w*)) + √ε ξ, with ξ from the same key."""
    loss_fn, params, data = linear_problem(backend)
    bk = backend.backend
    center, unravel = bk.ravel(params)
    loss_and_grad = bk.value_and_grad(loss_fn, unravel)
    posterior = LocalizedPosterior(loss_and_grad, center, nbeta=50.0, localization=3.0, backend=bk)
    algorithm = SGLD(step_size=0.01).build(posterior)
    start = center + 0.1 * bk.normal(bk.key(1), center)
    key = bk.key(7)
    state, info = algorithm.step(key, algorithm.init(start), data)

    w = bk.to_numpy(start).astype(np.float64)
    w_star = bk.to_numpy(center).astype(np.float64)
    _, grad = loss_and_grad(start, data)
    xi = bk.to_numpy(bk.normal(key, start)).astype(np.float64)
    expected = w - 0.005 * (50.0 * bk.to_numpy(grad) + 3.0 * (w - w_star)) + math.sqrt(0.01) * xi
    rtol = 1e-12 if backend.dtype == "float64" else 1e-5
    np.testing.assert_allclose(bk.to_numpy(state.position), expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(float(bk.to_numpy(info.distance)), np.linalg.norm(w - w_star),
                               rtol=rtol)


def test_linear_combination_is_the_expression_and_a_new_array(backend) -> None:
    """The samplers' fused updates: Σ cᵢ xᵢ in x₀'s dtype, for number and 0-d array
    coefficients, never written into (or returned as) an input."""
    bk = backend.backend
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(7) for _ in range(3)]
    xs = [backend.asarray(array) for array in arrays]
    before = [bk.to_numpy(x) for x in xs]
    scalar = backend.asarray(np.array(0.25))
    cases = [
        (((1.0, xs[0]), (-0.5, xs[1]), (3.0, xs[2])), arrays[0] - 0.5 * arrays[1] + 3 * arrays[2]),
        (((2.0, xs[0]), (0.5, xs[1])), 2 * arrays[0] + 0.5 * arrays[1]),
        (((scalar, xs[0]), (1.0, xs[1]), (scalar, xs[2])),
         0.25 * arrays[0] + arrays[1] + 0.25 * arrays[2]),
        (((4.0, xs[2]),), 4 * arrays[2]),
    ]
    rtol = 1e-12 if backend.dtype == "float64" else 1e-6
    for terms, expected in cases:
        combined = bk.linear_combination(*terms)
        assert bk.describe(combined)["dtype"] == backend.dtype
        assert all(combined is not x for x in xs)
        np.testing.assert_allclose(bk.to_numpy(combined), expected, rtol=rtol, atol=rtol)
    for x, original in zip(xs, before):
        np.testing.assert_array_equal(bk.to_numpy(x), original)


def test_linear_combination_with_a_reusable_term_is_the_expression(backend) -> None:
    """``reuse=i``: the same sum (the framework may write it into term i's array, which the
    caller gives up), every other input left as it was."""
    bk = backend.backend
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(7) for _ in range(3)]
    rtol = 1e-12 if backend.dtype == "float64" else 1e-6
    for reuse in range(3):
        xs = [backend.asarray(array) for array in arrays]
        combined = bk.linear_combination((1.0, xs[0]), (-0.5, xs[1]), (3.0, xs[2]), reuse=reuse)
        assert bk.describe(combined)["dtype"] == backend.dtype
        np.testing.assert_allclose(bk.to_numpy(combined),
                                   arrays[0] - 0.5 * arrays[1] + 3 * arrays[2], rtol=rtol,
                                   atol=rtol)
        for index, (x, original) in enumerate(zip(xs, arrays)):
            if index != reuse:
                np.testing.assert_allclose(bk.to_numpy(x), original, rtol=rtol)


def test_row_buffer_keeps_every_value_exactly_and_nan_elsewhere(backend) -> None:
    """The sequential runner's per-step table: rows of different lengths, written in any
    order, come back as float64 with the values unrounded and NaN where nothing was written."""
    bk = backend.backend
    values = np.random.default_rng(1).standard_normal((4, 3)).astype(backend.dtype)
    rows = bk.row_buffer(5, 3)
    rows.set(3, [backend.asarray(np.array(value)) for value in values[3]])
    rows.set(0, [backend.asarray(np.array(value)) for value in values[0, :2]])
    rows.set(1, [backend.asarray(np.array(value)) for value in values[1]])
    table = rows.to_numpy()
    expected = np.full((5, 3), np.nan)
    expected[3], expected[0, :2], expected[1] = values[3], values[0, :2], values[1]
    assert table.dtype == np.float64 and table.shape == (5, 3)
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(bk.row_buffer(2, 2).to_numpy(), np.full((2, 2), np.nan))


def test_same_seed_same_result_and_independent_chains(backend) -> None:
    loss_fn, params, data = linear_problem(backend)
    first = llc.estimate(loss_fn, params, data, seed=3, **SHORT)
    second = llc.estimate(loss_fn, params, data, seed=3, **SHORT)
    other = llc.estimate(loss_fn, params, data, seed=4, **SHORT)
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    assert first.llc_mean == second.llc_mean
    assert not np.array_equal(first.llc_trace, other.llc_trace)
    assert not np.array_equal(first.llc_trace[0], first.llc_trace[1])  # own streams per chain


def test_chains_do_not_depend_on_the_number_of_chains(backend64) -> None:
    """Chain c's stream depends on the seed and c only, not on how many chains run."""
    loss_fn, params, data = linear_problem(backend64)
    two = llc.estimate(loss_fn, params, data, **{**SHORT, "num_chains": 2})
    three = llc.estimate(loss_fn, params, data, **{**SHORT, "num_chains": 3})
    np.testing.assert_array_equal(two.llc_trace, three.llc_trace[:2])


def test_loss_scaling_rule_is_exact(backend64) -> None:
    """Loss × c with nβ / c leaves the chain and λ̂ unchanged (docs/design.md §1).

    With c = 4 every product is exact in binary floating point, so the traces agree bitwise
    (the loss trace scales by c); with c = 3 to rounding.
    """
    loss_fn, params, data = linear_problem(backend64)
    xp_free = backend64.backend.has_autodiff

    def scaled(c: float):
        if xp_free:
            return lambda p, b: c * loss_fn(p, b)

        def scaled_loss_and_grad(p, b):
            value, grads = loss_fn(p, b)
            return c * value, {k: c * g for k, g in grads.items()}

        return scaled_loss_and_grad

    base = llc.estimate(loss_fn, params, data, nbeta=400.0, **SHORT)
    exact = llc.estimate(scaled(4.0), params, data, nbeta=100.0, **SHORT)
    np.testing.assert_array_equal(base.llc_trace, exact.llc_trace)
    np.testing.assert_array_equal(4.0 * base.loss_trace, exact.loss_trace)
    rounded = llc.estimate(scaled(3.0), params, data, nbeta=400.0 / 3.0, **SHORT)
    np.testing.assert_allclose(rounded.llc_trace, base.llc_trace, rtol=1e-9, atol=1e-9)


def test_burnin_and_thinning_select_the_right_steps(backend64) -> None:
    """Draw d of (burn-in b, thin k) is step b + d·k of the same chain with no burn-in."""
    loss_fn, params, data = linear_problem(backend64)
    settings = dict(num_chains=1, step_size=1e-4, progress=False, seed=5)
    full = llc.estimate(loss_fn, params, data, num_burnin=0, num_draws=60, **settings)
    thinned = llc.estimate(loss_fn, params, data, num_burnin=10, num_draws=10, thin=5, **settings)
    np.testing.assert_array_equal(thinned.loss_trace[0], full.loss_trace[0, 10::5])
    np.testing.assert_array_equal(thinned.warmup_loss[0], full.loss_trace[0, :10])


def test_estimator_formula(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    result = llc.estimate(loss_fn, params, data, **SHORT)  # baseline="minibatch"
    np.testing.assert_allclose(result.llc_trace, result.nbeta * (
        result.loss_trace - result.sample_stats["baseline_loss"]))
    full = llc.estimate(loss_fn, params, data, **{**SHORT, "baseline": "full"})
    np.testing.assert_allclose(full.llc_trace, full.nbeta * (full.loss_trace - full.init_loss))
    np.testing.assert_array_equal(full.loss_trace, result.loss_trace)  # the same chains
    assert result.llc_mean == pytest.approx(result.llc_trace.mean())
    np.testing.assert_allclose(result.llc_chains, result.llc_trace.mean(axis=1))
    assert result.llc_std == pytest.approx(np.std(result.llc_trace.mean(axis=1), ddof=1))
    n = data[0].shape[0]
    assert result.nbeta == pytest.approx(n / math.log(n))
    x, y = backend64.to_numpy(data)
    w = backend64.to_numpy(params)["weight"]
    expected = 0.5 * np.mean(np.sum((x @ w.T - y) ** 2, 1))
    assert result.init_loss == pytest.approx(expected, rel=1e-12)
    w_moved = w + 0.01  # off the least-squares point, where the gradient is not ~0
    moved = llc.estimate(loss_fn, backend64.asarray({"weight": w_moved}), data, **SHORT)
    expected = np.linalg.norm((x @ w_moved.T - y).T @ x / len(x))
    assert moved.attrs["init_grad_norm"] == pytest.approx(expected, rel=1e-10)
    assert result.attrs["init_grad_norm"] < 1e-10


def test_minibatch_baseline_subtracts_the_same_batch(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    result = llc.estimate(loss_fn, params, data, baseline="minibatch", **SHORT)
    baseline = result.sample_stats["baseline_loss"]
    np.testing.assert_allclose(result.llc_trace, result.nbeta * (result.loss_trace - baseline))
    assert not np.allclose(baseline, result.init_loss)


def test_init_loss_batches_uses_a_stated_number_of_batches(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64, n=3000)
    full = llc.estimate(loss_fn, params, data, **SHORT)
    partial = llc.estimate(loss_fn, params, data, init_loss_batches=1, **SHORT)
    x, y = backend64.to_numpy(data)
    w = backend64.to_numpy(params)["weight"]
    first = slice(0, 256)  # one batch of the default batch_size, min(256, n)
    expected = 0.5 * np.mean(np.sum((x[first] @ w.T - y[first]) ** 2, 1))
    assert partial.init_loss == pytest.approx(expected, rel=1e-12)
    assert partial.init_loss != pytest.approx(full.init_loss, rel=1e-6)
    assert partial.attrs["init_loss_batches"] == 1


def test_arviz_export_and_summary(backend, tmp_path) -> None:
    loss_fn, params, data = linear_problem(backend)
    result = llc.estimate(loss_fn, params, data, **SHORT)
    tree = result.to_arviz()
    assert isinstance(tree, xr.DataTree)
    assert tree["posterior"]["llc"].dims == ("chain", "draw")
    assert tree["posterior"]["loss"].shape == (2, 50)
    for name in ("distance", "grad_norm", "diverging"):
        assert tree["sample_stats"][name].dims == ("chain", "draw")
    assert tree["warmup_posterior"]["loss"].shape == (2, 20)
    for key in ("nbeta", "localization", "init_loss", "backend", "sampler", "sampler_step_size",
                "num_data", "inference_library"):
        assert key in tree.attrs
    assert tree.attrs["backend"] == backend.name
    path = tmp_path / "run.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    loaded = xr.open_datatree(path, engine="h5netcdf")
    np.testing.assert_array_equal(loaded["posterior"]["llc"].values, result.llc_trace)
    assert loaded.attrs["nbeta"] == result.nbeta

    table = result.summary()
    assert list(table.index) == ["llc"]
    for column in ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat", "nbeta"):
        assert column in table.columns
    assert table.loc["llc", "mean"] == pytest.approx(result.llc_mean)
    assert 0 < result.llc_mcse < table.loc["llc", "sd"]
    # ArviZ's own definitions: the tail ESS is what arviz_stats reports for the trace
    import arviz_base
    import arviz_stats

    healthy = arviz_base.from_dict({"posterior": {"llc": result.llc_trace}})
    assert result.ess_tail == pytest.approx(float(arviz_stats.ess(healthy, method="tail")["llc"]))
    assert table.loc["llc", "ess_tail"] == pytest.approx(result.ess_tail)
    assert "LLCResult(llc=" in repr(result)


def test_iterable_batches_with_num_data(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64, n=512)
    x, y = data
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]
    first = llc.estimate(loss_fn, params, batches, num_data=512, **SHORT)
    second = llc.estimate(loss_fn, params, batches, num_data=512, **SHORT)
    arrays = llc.estimate(loss_fn, params, data, **SHORT)
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    assert first.init_loss == pytest.approx(arrays.init_loss, rel=1e-12)
    assert first.nbeta == arrays.nbeta


def test_mala_acceptance_matches_a_hand_computation(backend64) -> None:
    """On the quadratic loss, a = min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w)))."""
    loss_fn, params, data = linear_problem(backend64, n=64)
    bk = backend64.backend
    center, unravel = bk.ravel(params)
    nbeta, gamma, eps = 40.0, 2.0, 0.02
    posterior = LocalizedPosterior(bk.value_and_grad(loss_fn, unravel), center, nbeta, gamma, bk)
    algorithm = SGLD(step_size=eps).build(posterior)
    start = center + 0.05 * bk.normal(bk.key(3), center)
    new_state, info = algorithm.step(bk.key(4), algorithm.init(start), data, True)

    x, y = (np.asarray(a, dtype=np.float64) for a in backend64.to_numpy(data))
    w_star = bk.to_numpy(center)

    def potential_and_gradient(w):
        weight = w.reshape(2, 3)
        residual = x @ weight.T - y
        loss = 0.5 * np.mean(np.sum(residual**2, 1))
        grad = (residual.T @ x / len(x)).ravel()
        potential = nbeta * loss + 0.5 * gamma * np.sum((w - w_star) ** 2)
        return potential, nbeta * grad + gamma * (w - w_star)

    w, w_new = bk.to_numpy(start), bk.to_numpy(new_state.position)
    u, grad_u = potential_and_gradient(w)
    u_new, grad_u_new = potential_and_gradient(w_new)
    log_q_forward = -np.sum((w_new - w + 0.5 * eps * grad_u) ** 2) / (2 * eps)
    log_q_backward = -np.sum((w - w_new + 0.5 * eps * grad_u_new) ** 2) / (2 * eps)
    expected = min(1.0, np.exp(u - u_new + log_q_backward - log_q_forward))
    assert 0.0 < expected < 1.0  # a real test of the formula, not of the min(1, ·)
    assert float(bk.to_numpy(info.mala_acceptance)) == pytest.approx(expected, rel=1e-10)
    _, plain = algorithm.step(bk.key(4), algorithm.init(start), data)
    assert plain.mala_acceptance is None


def test_mala_acceptance_is_recorded_every_k_draws(backend64) -> None:
    loss_fn, params, data = linear_problem(backend64)
    result = llc.estimate(loss_fn, params, data, mala_every=5, **SHORT)
    acceptance = result.sample_stats["mala_acceptance"]
    assert np.isfinite(acceptance[:, ::5]).all()
    assert np.isnan(np.delete(acceptance, np.s_[::5], axis=1)).all()
    assert 0.5 < result.mala_acceptance <= 1.0
    assert result.summary().loc["llc", "mala_acceptance"] == pytest.approx(result.mala_acceptance)
    off = llc.estimate(loss_fn, params, data, mala_every=None, **SHORT)
    assert "mala_acceptance" not in off.sample_stats
    np.testing.assert_array_equal(off.llc_trace, result.llc_trace)  # diagnosis changes nothing


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_and_load_round_trip(backend64, tmp_path, suffix) -> None:
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    loss_fn, params, data = linear_problem(backend64)
    result = llc.estimate(loss_fn, params, data, baseline="minibatch", **SHORT)
    path = result.save(tmp_path / f"run{suffix}")
    loaded = llc.load(path)
    np.testing.assert_array_equal(loaded.llc_trace, result.llc_trace)
    np.testing.assert_array_equal(loaded.loss_trace, result.loss_trace)
    np.testing.assert_array_equal(loaded.warmup_loss, result.warmup_loss)
    assert set(loaded.sample_stats) == set(result.sample_stats)
    for name, values in result.sample_stats.items():
        np.testing.assert_array_equal(loaded.sample_stats[name], values)
        assert loaded.sample_stats[name].dtype == values.dtype
    assert loaded.attrs == {k: v for k, v in result.to_arviz().attrs.items()
                            if k not in ("elapsed_seconds", "failed_chains", "chain_errors",
                                         "findings")}
    assert loaded.findings == result.findings and result.findings  # short runs have findings
    assert loaded.llc_mean == result.llc_mean
    assert loaded.llc_mcse == pytest.approx(result.llc_mcse)
    assert list(loaded.failed_chains) == list(result.failed_chains)
    assert loaded.elapsed == pytest.approx(result.elapsed)


def test_load_rejects_what_is_not_a_result(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="`path`"):
        llc.load(tmp_path / "missing.nc")
    xr.DataTree.from_dict({"posterior": xr.Dataset({"x": ("draw", [1.0])})}).to_netcdf(
        tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="sample_stats"):
        llc.load(tmp_path / "other.nc")


def test_progress_bar_on_stderr_only_when_asked(backend64, capsys) -> None:
    loss_fn, params, data = linear_problem(backend64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)  # short runs: stderr for the bar
        llc.estimate(loss_fn, params, data, **{**SHORT, "progress": True})
        shown = capsys.readouterr().err
        assert "llc 2 chains" in shown and "100%" in shown and "llc=" in shown
        llc.estimate(loss_fn, params, data, **{**SHORT, "progress": None})  # not a terminal
        assert capsys.readouterr().err == ""


def test_datatree_passes_through_arviz_stats(backend64) -> None:
    import arviz_stats

    loss_fn, params, data = linear_problem(backend64)
    tree = llc.estimate(loss_fn, params, data, **SHORT).to_arviz()
    table = arviz_stats.summary(tree, round_to="none")
    assert {"llc", "loss"} <= set(table.index)
    assert np.isfinite(table.loc["llc", "ess_bulk"])
    assert tree.attrs["inference_library"] == "llc"
    assert tree.attrs["inference_library_version"] == llc.__version__
