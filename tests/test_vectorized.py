"""The vectorized runner (``chain_method="vectorized"``) against the sequential reference.

Both paths draw the same random numbers (noise keys ``fold_in(chain key, step)``, minibatch
rows from the same per-epoch permutations), so their results agree to rounding; these tests
check that for every sampler, with burn-in, thinning, MALA diagnostics, the minibatch
baseline, kept parameter draws, epochs and block boundaries crossed, divergence, interrupts
and resume.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llc
from llc._engine import vectorized as _vectorized

from _models import linear_problem

SETTINGS = dict(num_chains=3, num_draws=150, num_burnin=30, thin=2, step_size=1e-4,
                progress=False, seed=5, baseline="minibatch", mala_every=3, batch_size=64,
                keep_params_every=25)


@pytest.fixture
def vectorizable(backend):
    """Backend cases whose adapter runs chains vectorized."""
    if backend.backend.chain_transforms is None:
        pytest.skip(f"{backend.name} runs chains sequentially")
    return backend


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def _assert_close(vectorized: llc.LLCResult, sequential: llc.LLCResult, rtol: float) -> None:
    np.testing.assert_allclose(vectorized.llc_trace, sequential.llc_trace, rtol=rtol,
                               atol=rtol * np.nanmax(np.abs(sequential.llc_trace)))
    np.testing.assert_allclose(vectorized.warmup_loss, sequential.warmup_loss, rtol=rtol)
    assert vectorized.sample_stats.keys() == sequential.sample_stats.keys()
    for name, values in sequential.sample_stats.items():
        values = np.asarray(values)
        if values.dtype.kind == "f":
            np.testing.assert_allclose(vectorized.sample_stats[name], values, rtol=rtol,
                                       atol=rtol, err_msg=name)
        else:
            np.testing.assert_array_equal(vectorized.sample_stats[name], values, err_msg=name)


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop_sgld", "sghmc", "sgnht"])
def test_vectorized_chains_equal_the_sequential_loop(vectorizable, sampler) -> None:
    """Every sampler in float64 (bit for bit or to rounding); in float32 SGLD only — the
    samplers' code does not depend on the dtype, the rounding of the framework's kernels
    does, and one sampler checks that (CI's 15-minute budget)."""
    if vectorizable.dtype == "float32" and sampler != "sgld":
        pytest.skip("float32: SGLD stands for every sampler (docstring)")
    loss_fn, params, data = linear_problem(vectorizable)
    step_size = {"sghmc": 1e-3, "sgnht": 1e-3}.get(sampler, 1e-4)
    settings = {**SETTINGS, "sampler": sampler, "step_size": step_size}
    vectorized = _quiet(loss_fn, params, data, chain_method="vectorized", **settings)
    sequential = _quiet(loss_fn, params, data, chain_method="sequential", **settings)
    assert vectorized.attrs["chain_method"] == "vectorized"
    assert sequential.attrs["chain_method"] == "sequential"
    rtol = 1e-9 if vectorizable.dtype == "float64" else 2e-4
    _assert_close(vectorized, sequential, rtol)
    np.testing.assert_allclose(vectorized.param_draws, sequential.param_draws, rtol=rtol)
    assert np.isfinite(vectorized.param_draws).all()
    acceptance = np.asarray(vectorized.sample_stats.get("mala_acceptance"))
    if sampler in ("sgld", "rmsprop_sgld"):  # every 3rd draw diagnosed, the rest NaN
        assert np.isfinite(acceptance[:, ::3]).all() and np.isnan(acceptance[:, 1::3]).all()


def test_auto_picks_the_vectorized_path_where_it_pays(vectorizable) -> None:
    """JAX and TensorFlow: always with array data; torch: never on its own (the eager vmap
    costs more than it saves at these sizes, docs/benchmarks.md), only when asked."""
    loss_fn, params, (x, y) = linear_problem(vectorizable)
    settings = {**SETTINGS, "num_draws": 20, "keep_params_every": None}
    expected = "sequential" if vectorizable.name == "torch" else "vectorized"
    assert _quiet(loss_fn, params, (x, y), **settings).attrs["chain_method"] == expected
    assert _quiet(loss_fn, params, (x, y), chain_method="vectorized",
                  **settings).attrs["chain_method"] == "vectorized"
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]
    settings.pop("batch_size")
    assert _quiet(loss_fn, params, batches, num_data=512,
                  **settings).attrs["chain_method"] == "sequential"
    with pytest.raises(ValueError, match="`chain_method='vectorized'`.*iterable of batches"):
        _quiet(loss_fn, params, batches, num_data=512, chain_method="vectorized", **settings)


def test_chain_method_is_validated(backend) -> None:
    loss_fn, params, data = linear_problem(backend)
    with pytest.raises(ValueError, match="`chain_method` must be one of"):
        llc.estimate(loss_fn, params, data, chain_method="parallel")
    if backend.backend.chain_transforms is None:
        with pytest.raises(ValueError, match=f"not available: the {backend.name} backend"):
            llc.estimate(loss_fn, params, data, chain_method="vectorized", progress=False)
        result = _quiet(loss_fn, params, data, num_draws=10, num_burnin=0, progress=False)
        assert result.attrs["chain_method"] == "sequential"


# How far the first weight must move above w* for a chain to turn NaN: each backend has its own
# random streams, and with SETTINGS' seed some of its 4 chains get that far and some do not.
_DIVERGE_ABOVE = {"jax": 0.19, "tensorflow": 0.115, "torch": 0.15}


def _diverging_loss(case, loss_fn, params):
    """``loss_fn``, but NaN once the first weight has moved more than ``_DIVERGE_ABOVE``
    above w*."""
    xp = llc.array_namespace(params["weight"])
    limit = float(case.to_numpy(params)["weight"][0, 0]) + _DIVERGE_ABOVE[case.name]

    def loss(p, batch):
        value = loss_fn(p, batch)  # NaN added outside the gradient's path (0 · NaN is NaN);
        # an array operand gives the NaN the loss's dtype (TensorFlow does not promote)
        return value + xp.where(p["weight"][0, 0] > limit, float("nan"),
                                xp.zeros_like(value))

    return loss


def test_a_diverging_chain_is_left_out_the_same_way(vectorizable) -> None:
    loss_fn, params, data = linear_problem(vectorizable)
    loss = _diverging_loss(vectorizable, loss_fn, params)
    settings = {**SETTINGS, "num_chains": 4, "num_draws": 300, "keep_params_every": None}
    results = {}
    for method in ("vectorized", "sequential"):
        results[method] = _quiet(loss, params, data, chain_method=method, **settings)
        assert any(finding.code == "non-finite" for finding in results[method].findings)
    vectorized, sequential = results["vectorized"], results["sequential"]
    failed = vectorized.failed_chains
    assert 0 < failed.sum() < 4, "the scenario needs failing and healthy chains"
    np.testing.assert_array_equal(failed, sequential.failed_chains)
    assert vectorized.chain_errors == sequential.chain_errors
    _assert_close(vectorized, sequential, 1e-9 if vectorizable.dtype == "float64" else 2e-4)


def test_an_interrupted_vectorized_run_resumes_to_the_same_result(vectorizable, tmp_path,
                                                                  monkeypatch) -> None:
    loss_fn, params, data = linear_problem(vectorizable)
    settings = {**SETTINGS, "num_draws": 300, "keep_params_every": None}
    settings["chain_method"] = "vectorized"
    reference = _quiet(loss_fn, params, data, **settings)
    run = _vectorized.BlockKernel.run
    calls = []

    def interrupt_third_block(self, states, start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(self, states, start, stop)

    monkeypatch.setattr(_vectorized.BlockKernel, "run", interrupt_third_block)
    path = tmp_path / "run.nc"
    with pytest.warns(llc.IncompleteRunWarning, match="interrupted at step 400"):
        partial = _quiet(loss_fn, params, data, checkpoint=path, **settings)
    monkeypatch.setattr(_vectorized.BlockKernel, "run", run)
    # draws at steps 30, 32, ..., 398
    assert not partial.complete and partial.llc_trace.shape[1] == (400 - 30) // 2
    resumed = _quiet(loss_fn, params, data, resume=path, **settings)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.llc_trace, reference.llc_trace)
    np.testing.assert_array_equal(resumed.warmup_loss, reference.warmup_loss)
