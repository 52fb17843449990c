"""``step_size="auto"``: the burn-in adapts ε to a target MALA acceptance, then freezes it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import llc
from llc.problems import DeepLinearNetwork

from _models import linear_data, linear_loss_and_grad, linear_problem

# the demo problem, λ = 7, at the known-λ suite's settings but for the step
SETTINGS = dict(batch_size=500, localization=1.0, num_chains=4, num_draws=4000,
                num_burnin=1000, baseline="minibatch", seed=0, progress=False)
DLN = DeepLinearNetwork((4, 5, 3, 4), rank=2)


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


@pytest.mark.statistical
def test_auto_step_recovers_the_known_lambda() -> None:
    """Within 10 % of λ with 4·MCSE < 10 % (the known-λ suite's criterion); without the noise
    cap and with a target of 0.9 the step is larger and λ̂ far off, so the test can tell."""
    data, params = DLN.setup(10_000, seed=0)
    result = _quiet(DLN.loss_and_grad, params, data, step_size="auto", **SETTINGS)
    error = result.llc_mean / DLN.true_lambda - 1
    assert 4 * result.llc_mcse < 0.1 * DLN.true_lambda
    assert abs(error) < 0.10, f"λ̂ = {result.llc_mean:.3f}, error {100 * error:+.1f} %"
    chosen = float(result.attrs["sampler_step_size"])
    history = json.loads(result.attrs["step_size_history"])
    assert len(history) == 1000 // 25 and history[0][:2] == [0, pytest.approx(1e-4)]
    assert np.all(result.sample_stats["step_size"] == chosen)
    assert result.attrs["step_size_adaptation"] == "burn-in, to MALA acceptance 0.995"
    assert result.mala_acceptance > 0.98  # the draws run near the target
    with pytest.MonkeyPatch.context() as patch:  # a negative control: no noise cap, δ = 0.9
        patch.setattr("llc._adapt._NOISE_BIAS", 10.0)
        loose = _quiet(DLN.loss_and_grad, params, data, step_size="auto",
                       target_acceptance=0.9, **{**SETTINGS, "num_draws": 1000})
    assert float(loose.attrs["sampler_step_size"]) > 2 * chosen
    assert loose.llc_mean > 1.2 * DLN.true_lambda


def test_auto_step_is_reproducible_and_resumes(tmp_path) -> None:
    data, params = DLN.setup(2_000, seed=1)
    settings = {**SETTINGS, "num_draws": 300, "num_burnin": 200, "num_chains": 2,
                "batch_size": 200, "step_size": "auto"}
    first = _quiet(DLN.loss_and_grad, params, data, **settings)
    second = _quiet(DLN.loss_and_grad, params, data, **settings)
    assert first.attrs["sampler_step_size"] == second.attrs["sampler_step_size"]
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    np.testing.assert_array_equal(first.warmup_loss, second.warmup_loss)
    calls = {"count": 0}

    def interrupted(p, batch):
        calls["count"] += 1
        if calls["count"] == 2 * 200 * 2 + 2 + 2 * 150:  # probe, L_n, burn-in, 150 draws
            raise KeyboardInterrupt
        return DLN.loss_and_grad(p, batch)

    path = tmp_path / "auto.nc"
    with pytest.warns(llc.IncompleteRunWarning):
        partial = _quiet(interrupted, params, data, checkpoint=path, **settings)
    assert not partial.complete
    assert partial.attrs["sampler_step_size"] == first.attrs["sampler_step_size"]
    resumed = _quiet(DLN.loss_and_grad, params, data, resume=path, **settings)
    np.testing.assert_array_equal(resumed.llc_trace, first.llc_trace)
    assert resumed.attrs["step_size_history"] == first.attrs["step_size_history"]


def test_auto_step_in_every_backend(backend64) -> None:
    """The same adaptation through every adapter, on a Gaussian posterior with nβ = 10⁴ and
    full batches (no minibatch noise, so no noise cap): the start 1e-4 is accepted at about
    0.82, the step shrinks until the windows run at the target, and the draws do too."""
    loss_fn, params, data = linear_problem(backend64)
    result = _quiet(loss_fn, params, data, step_size="auto", num_burnin=200, num_draws=200,
                    num_chains=2, batch_size=512, progress=False, nbeta=1e4, mala_every=2)
    history = json.loads(result.attrs["step_size_history"])
    assert history[0][2] < 0.9
    settled = [acceptance for _, _, acceptance in history[len(history) // 2:]]
    assert 0.98 < np.mean(settled) < 0.995, history
    assert 5e-6 < float(result.attrs["sampler_step_size"]) < 5e-5
    assert result.mala_acceptance > 0.98
    assert not result.failed_chains.any() and np.isfinite(result.llc_trace).all()


def test_minibatch_noise_caps_the_step() -> None:
    """nβ = 10⁴ on 512 rows in batches of 64: the minibatch noise would add
    (ε nβ²/8) tr Σ_B ≫ λ at any step the acceptance allows, so the cap sets ε, and it is
    the formula's value."""
    from llc import _adapt

    data, params = linear_data()
    result = _quiet(linear_loss_and_grad, params, data, step_size="auto", num_burnin=100,
                    num_draws=50, num_chains=2, batch_size=64, progress=False, nbeta=1e4)
    chosen = float(result.attrs["sampler_step_size"])
    x, y = data
    residual = x @ params["weight"].T - y
    per_row = np.einsum("ni,nj->nij", residual, x).reshape(len(x), -1)  # per-sample gradients
    trace = per_row.var(axis=0, ddof=1).sum() / 64 * (512 - 64) / (512 - 1)
    expected = 8 * _adapt._NOISE_BIAS * 3 / (1e4**2 * trace)  # d/2 = 3
    assert chosen == pytest.approx(expected, rel=0.5)  # tr Σ_B from 16 probes: ±35 % (χ²)
    assert chosen < 1e-6


def test_auto_step_errors() -> None:
    data, params = DLN.setup(1_000, seed=0)
    base = {"num_draws": 10, "progress": False}
    with pytest.raises(ValueError, match="`step_size` must be a positive number or 'auto'"):
        llc.estimate(DLN.loss_and_grad, params, data, step_size="fast", **base)
    with pytest.raises(ValueError, match="`num_burnin` must be at least 100"):
        llc.estimate(DLN.loss_and_grad, params, data, step_size="auto", num_burnin=50, **base)
    with pytest.raises(ValueError, match="`target_acceptance` must be in"):
        llc.estimate(DLN.loss_and_grad, params, data, step_size="auto", target_acceptance=1.0,
                     **base)
    with pytest.raises(ValueError, match="does not report.*sghmc and sgnht"):
        llc.estimate(DLN.loss_and_grad, params, data, step_size="auto", sampler="sghmc", **base)
