"""Statistical tests: λ̂ recovers closed-form λ on known-λ problems (docs/validation.md).

Fixed seeds; each accuracy test requires the Monte Carlo error to be small enough for the
10 % claim to mean something (4·MCSE < 10 % of λ) and then |λ̂ − λ| < 10 % of λ. The same
check is run with deliberately broken samplers (drift without the ½, noise √(2ε)) and must
fail for them: the negative controls. Settings are documented in docs/validation.md.

The accuracy tests run on the NumPy reference backend, plus the deep linear network in
float32 torch; every backend computes the same losses, gradients and sampler updates
(tests/test_parity.py), so running the suite in each would test the random numbers only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pytest

import llc
from llc.problems import (DeepLinearNetwork, LinearRegression, Monomial,
                          ReducedRankRegression)
from llc.samplers import SampleInfo, SamplingAlgorithm, SGLDState

pytestmark = pytest.mark.statistical

# n = 10 000 (nβ = n / log n ≈ 1086), batch 500, ε = 3e-5, γ = 1, 8 chains × 4000 draws
# after 1000 burn-in steps, the same-minibatch baseline (docs/validation.md). Eight chains:
# the reported MCSE is the larger of the autocorrelation MCSE and the spread of the chain
# means, which from 4 chains is itself too uncertain for the 4·MCSE < 10 % guard.
SETTINGS = dict(batch_size=500, step_size=3e-5, localization=1.0, num_chains=8,
                num_draws=4000, num_burnin=1000, baseline="minibatch", seed=0, progress=False)
NUM_DATA = 10_000

PROBLEMS = {
    "regular-4x3": LinearRegression(4, 3),  # λ = 6
    "rrr-5-3-5-r2": ReducedRankRegression(5, 3, 5, rank=2),  # λ = 9.5
    "rrr-4-3-6-r1": ReducedRankRegression(4, 3, 6, rank=1),  # λ = 7.5
    "dln-4-5-3-4-r2": DeepLinearNetwork((4, 5, 3, 4), rank=2),  # λ = 7, three layers
}
# rank 1 of 3 mixes slowly: three times the draws for its MCSE (8 chains × 12 000 draws: 0.15
# and 0.08 at seeds 0 and 1, against the 0.1875 that 4·MCSE < 10 % of λ allows) and twice the
# burn-in (after 1000 steps chains were still rising: a drift-after-burnin finding).
# The regular model sits a few % above d/2 at this step (discretization and minibatch-gradient
# noise: +3.2 % and +1.5 % at seeds 0 and 1): twice the draws keep the MC error apart from the
# 10 % band.
OVERRIDES = {"rrr-4-3-6-r1": dict(num_draws=12000, num_burnin=2000),
             "regular-4x3": dict(num_draws=8000)}


def recovery(result: llc.LLCResult, true_lambda: float) -> tuple[bool, str]:
    """Whether λ̂ is precise (4·MCSE < 10 % of λ) and within 10 % of λ."""
    mcse = result.llc_mcse
    error = result.llc_mean / true_lambda - 1.0
    message = (f"λ̂ = {result.llc_mean:.3f} ± {mcse:.3f}, λ = {true_lambda}, "
               f"error {100 * error:+.1f} %")
    return 4 * mcse < 0.1 * true_lambda and abs(error) < 0.10, message


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_recovers_known_lambda(name: str) -> None:
    problem = PROBLEMS[name]
    loss_fn, params, data = problem.in_backend("numpy", NUM_DATA)
    result = llc.estimate(loss_fn, params, data, **{**SETTINGS, **OVERRIDES.get(name, {})})
    ok, message = recovery(result, problem.true_lambda)
    assert ok, message
    assert result.rhat < 1.05, result.rhat
    assert result.findings == [], result.findings  # a healthy run raises no health finding


def test_recovers_known_lambda_float32() -> None:
    """The deep linear network in float32 torch (CPU, and CUDA when present)."""
    torch = pytest.importorskip("torch")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    problem = PROBLEMS["dln-4-5-3-4-r2"]
    data_np, params_np = problem.setup(NUM_DATA, seed=0)
    for device in devices:
        params = {k: torch.tensor(v, dtype=torch.float32, device=device)
                  for k, v in params_np.items()}
        result = llc.estimate(problem.loss, params, data_np, **SETTINGS,
                              chain_method="vectorized")
        assert result.attrs["dtype"] == "float32"
        ok, message = recovery(result, problem.true_lambda)
        assert ok, f"{device}: {message}"


# ---- negative controls: the same check must fail for a broken sampler ----------------------


@dataclass(frozen=True)
class BrokenSGLD:
    """SGLD with one deliberate bug: ``drift_factor`` replaces ½, ``noise_factor`` scales ε."""

    step_size: float
    drift_factor: float = 0.5
    noise_factor: float = 1.0
    name: str = "broken_sgld"

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    def build(self, posterior: llc.LocalizedPosterior) -> SamplingAlgorithm:
        backend = posterior.backend

        def step(key, state, batch, diagnose=False):
            loss, grad, drift = posterior.potential_gradient(state.position, batch)
            noise = backend.normal(key, state.position)
            position = (state.position - self.drift_factor * self.step_size * drift
                        + math.sqrt(self.noise_factor * self.step_size) * noise)
            xp = backend.namespace(position)
            info = SampleInfo(loss, posterior.distance(state.position), xp.linalg.vector_norm(grad))
            return SGLDState(position), info

        return SamplingAlgorithm(lambda position: SGLDState(position), step)


BROKEN = {
    "drift-without-half": dict(drift_factor=1.0),
    "noise-sqrt-2eps": dict(noise_factor=2.0),
}


@pytest.mark.parametrize("bug", list(BROKEN))
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_negative_control_broken_sampler_fails(name: str, bug: str) -> None:
    """4 chains × 2000 draws: the bugs' biases (−35 to −45 %, +100 %) are many times the
    Monte Carlo error there, so the longer runs the accuracy tests need are not."""
    problem = PROBLEMS[name]
    data, params = problem.setup(NUM_DATA, seed=0)
    sampler = BrokenSGLD(step_size=SETTINGS["step_size"], **BROKEN[bug])
    result = llc.estimate(problem.loss_and_grad, params, data, **{
        **SETTINGS, "sampler": sampler, "num_chains": 4, "num_draws": 2000})
    ok, message = recovery(result, problem.true_lambda)
    assert not ok, f"a sampler with bug {bug!r} passed: {message}"
    # clearly wrong, not merely imprecise: off by more than 10 % plus 4 MCSE
    assert abs(result.llc_mean - problem.true_lambda) > 0.1 * problem.true_lambda \
        + 4 * result.llc_mcse, message


# ---- the singular monomial w1² w2⁴ at finite nβ -------------------------------------------

MONOMIAL_SETTINGS = dict(localization=10.0, step_size=3e-4, batch_size=1, num_chains=4,
                         num_draws=20_000, num_burnin=4000, seed=0, progress=False)


def test_monomial_matches_the_exact_finite_nbeta_expectation() -> None:
    """K = w1² w2⁴ (λ = 1/4): λ̂ matches E_p[nβ K] from quadrature within 4 MCSE, both sit
    well below λ at finite nβ, and both rise towards λ as nβ grows (docs/design.md §3)."""
    problem = Monomial((1, 2))
    data, params = problem.setup(100, seed=0)
    estimates = {}
    for nbeta, step_size in ((1e3, 1e-3), (1e4, 3e-4)):
        result = llc.estimate(problem.loss_and_grad, params, data, nbeta=nbeta,
                              **{**MONOMIAL_SETTINGS, "step_size": step_size})
        exact = problem.exact_expectation(nbeta, MONOMIAL_SETTINGS["localization"])
        assert abs(result.llc_mean - exact) < 4 * result.llc_mcse, (nbeta, result.llc_mean, exact)
        assert result.llc_mean + 4 * result.llc_mcse < 0.25
        estimates[nbeta] = (result.llc_mean, result.llc_mcse, exact)
    (low, low_se, low_exact), (high, high_se, high_exact) = estimates[1e3], estimates[1e4]
    assert low_exact < high_exact < 0.25
    assert high - low > 2 * math.hypot(low_se, high_se)
