"""Watanabe's observables on a regular model, where theory gives the answers.

LinearRegression(4, 3) has d = 12 and λ = ν = d/2 = 6 at every β. The draws of an estimate
at the known-λ suite's settings (NumPy backend, fixed seed) give ν̂ = (nβ/2m) Σ_i Var[ℓ_i];
the tolerance is 4 standard errors from the spread of the per-chain ν̂ plus the +5 % the
suite measures for this step size (docs/validation.md). A sampler whose stationary law is
wrong (the drift without its ½ samples exp(−2U): half the posterior variance) fails it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import llc
from llc.slt_observables import Observables, wbic
from llc.problems import LinearRegression

from test_known_lambda import BrokenSGLD

pytestmark = pytest.mark.statistical

PROBLEM = LinearRegression(4, 3)
SETTINGS = dict(batch_size=500, step_size=3e-5, num_draws=4000, num_burnin=1000,
                keep_params_every=10, baseline="minibatch", seed=0, progress=False)
NUM_DATA, NUM_EVAL = 10_000, 1000


def pointwise_loss(params, batch):
    """Per-sample Gaussian negative log-likelihood (σ = 1), with its constant."""
    x, y = batch
    residual = x @ params["weight"].T - y
    return 0.5 * np.sum(residual**2, axis=1) + 0.5 * y.shape[1] * math.log(2 * math.pi)


@pytest.fixture(scope="module")
def sampled():
    data, params = PROBLEM.setup(NUM_DATA, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(PROBLEM.loss_and_grad, params, data, **SETTINGS)
    eval_data = (data[0][:NUM_EVAL], data[1][:NUM_EVAL])
    return result, params, eval_data, llc.observables(result, pointwise_loss, params, eval_data)


def _within_theory(observed: Observables) -> tuple[bool, str]:
    per_chain = [Observables(observed.pointwise_loss[c:c + 1], observed.nbeta,
                             observed.num_data, observed.wbic, observed.llc_draws[c:c + 1]
                             ).singular_fluctuation
                 for c in range(observed.pointwise_loss.shape[0])]
    error = np.std(per_chain, ddof=1) / math.sqrt(len(per_chain))
    nu, expected = observed.singular_fluctuation, PROBLEM.true_lambda
    message = f"ν̂ = {nu:.3f} ± {error:.3f} (chains {np.round(per_chain, 2)}), d/2 = {expected}"
    return abs(nu - expected) < 4 * error + 0.05 * expected, message


def test_singular_fluctuation_of_a_regular_model_is_half_the_dimension(sampled) -> None:
    ok, message = _within_theory(sampled[3])
    assert ok, message


def test_a_wrong_sampler_gives_the_wrong_singular_fluctuation() -> None:
    data, params = PROBLEM.setup(NUM_DATA, seed=0)
    broken = BrokenSGLD(step_size=SETTINGS["step_size"], drift_factor=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(PROBLEM.loss_and_grad, params, data,
                              **{**SETTINGS, "sampler": broken})
    observed = llc.observables(result, pointwise_loss, params,
                               (data[0][:NUM_EVAL], data[1][:NUM_EVAL]))
    ok, message = _within_theory(observed)
    assert not ok, f"the broken sampler passed: {message}"
    assert observed.singular_fluctuation < 0.75 * PROBLEM.true_lambda  # about half


def test_wbic_is_the_loss_at_the_minimum_plus_lambda_log_n(sampled) -> None:
    """WBIC = n L_n(w*) + λ log n + O(√log n) (Watanabe 2013); here within 10 % of λ log n,
    and equal to n times the mean minibatch loss of the draws."""
    result, _, _, observed = sampled
    n = NUM_DATA
    assert observed.wbic == pytest.approx(n * result.loss_trace.mean(), rel=1e-12)
    excess = (observed.wbic - n * result.init_loss) / math.log(n)
    assert excess == pytest.approx(PROBLEM.true_lambda, rel=0.10)
    small_data, small_params = PROBLEM.setup(2000, seed=0)
    other = llc.estimate(PROBLEM.loss_and_grad, small_params, small_data,
                         nbeta=500.0, num_draws=20, num_burnin=0, progress=False,
                         keep_params_every=5)
    with pytest.raises(ValueError, match="WBIC needs the posterior at β = 1/log n"):
        wbic(other)
    assert math.isnan(llc.observables(other, pointwise_loss, small_params, small_data).wbic)


def test_waic_and_the_log_likelihood_group(sampled) -> None:
    """WAIC = T + β V / m; ArviZ's PSIS-LOO on the exported group agrees: its effective
    number of parameters p_loo is the functional variance to within 10 %."""
    import arviz_stats

    result, _, _, observed = sampled
    beta = result.nbeta / NUM_DATA
    assert observed.waic == pytest.approx(
        observed.training_loss + beta * observed.functional_variance / NUM_EVAL, rel=1e-12)
    assert observed.training_loss > 0
    tree = observed.to_arviz()
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "eval_point")
    assert tree["log_likelihood"]["y"].shape == (4, 400, NUM_EVAL)
    # ArviZ's schema: the estimate's chain and draw indices, and the observed targets
    every = int(result.attrs["keep_params_every"])
    assert tree["posterior"]["chain"].values.tolist() == [0, 1, 2, 3]
    assert tree["posterior"]["draw"].values.tolist() == list(range(0, 400 * every, every))
    assert tree["log_likelihood"]["draw"].values.tolist() == \
        tree["posterior"]["draw"].values.tolist()
    np.testing.assert_array_equal(tree["observed_data"]["y"].values, sampled[2][1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = arviz_stats.loo(tree)
    assert float(loo.p) == pytest.approx(observed.functional_variance, rel=0.10)


def test_observables_print_a_summary_not_their_arrays(sampled) -> None:
    observed = sampled[3]
    text = repr(observed)
    assert len(text) < 400 and "array" not in text
    assert f"WAIC={observed.waic:.6g}" in text and f"× {NUM_EVAL} evaluation points" in text
    assert str(observed) == text


def test_observables_errors(sampled) -> None:
    result, params, eval_data, _ = sampled
    data, _ = PROBLEM.setup(500, seed=1)
    plain = llc.estimate(PROBLEM.loss_and_grad, params, data, num_draws=10, num_burnin=0,
                         progress=False)
    with pytest.raises(ValueError, match="keep_params_every"):
        llc.observables(plain, pointwise_loss, params, eval_data)
    with pytest.raises(ValueError, match="one loss per point"):
        llc.observables(result, lambda p, b: pointwise_loss(p, b)[:10], params, eval_data)
    with pytest.raises(ValueError, match="pass the estimate's own params"):
        llc.observables(result, pointwise_loss, {"weight": np.zeros((2, 2))}, eval_data)
    with pytest.raises(TypeError, match="`pointwise_loss_fn` must be callable"):
        llc.observables(result, None, params, eval_data)
    batches = [(eval_data[0][:50], eval_data[1][:50]), (eval_data[0][50:], eval_data[1][50:])]
    with pytest.raises(TypeError, match="`eval_data` must be arrays sharing their rows"):
        llc.observables(result, pointwise_loss, params, batches)
