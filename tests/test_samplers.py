"""The samplers of ``llc.samplers`` against Gaussian targets whose law is known in closed form.

Target. ``K`` independent blocks of dimension 3 share one flat position, so one sampler run is
``K`` independent chains (every update is per coordinate, except SGNHT's thermostat, which
then samples the product target, and MALA's accept test, run on one block per chain). Per block

    L(w) = ½ (w − m)ᵀ A (w − m),   U = nβ L + (γ/2)‖w − w*‖²,
    target N(μ, Σ),   Σ⁻¹ = P = nβ A + γ I,   μ = P⁻¹ (nβ A m + γ w*).

Tolerances. For every coordinate i the sample mean must lie within ``Z`` MCSE of μᵢ, and for
every pair (i, j) the mean of (xᵢ − μᵢ)(xⱼ − μⱼ) within ``Z`` MCSE of Σᵢⱼ plus the known
discretization bias of the unadjusted samplers. The MCSE comes from the bulk ESS of arviz-stats
over (block = chain, draw). The bias is exact for these linear recursions: the stationary
covariance of x' = M x + noise solves the discrete Lyapunov equation Σ_h = M Σ_h Mᵀ + Q
(for SGNHT with the thermostat at its measured mean); the mean has no bias. Steps are chosen so
that this bias is at most a fraction ``MAX_BIAS_OVER_MCSE`` of the MCSE (asserted, so the test
stays meaningful), and every check is shown to fail for a deliberately broken sampler.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from arviz_stats.base import array_stats

import llc
from llc.posterior import LocalizedPosterior
from llc.samplers import (
    MALA,
    SGHMC,
    SGLD,
    SGNHT,
    MALAState,
    RMSPropSGLD,
    RMSPropSGLDState,
    SampleInfo,
    SamplingAlgorithm,
    SGHMCState,
    SGLDState,
    SGNHTState,
    SAMPLERS,
    get_sampler,
)

Z = 4.0  # MCSE multiples allowed; 9 checks per run: a false alarm has probability ≈ 6e-4
MAX_BIAS_OVER_MCSE = 0.35  # discretization bias ≪ MCSE (asserted per run)

DIM = 3
_ROTATION = np.linalg.qr(np.random.default_rng(11).standard_normal((DIM, DIM)))[0]
HESSIAN = _ROTATION @ np.diag([0.1, 0.2, 0.3]) @ _ROTATION.T  # A: P has eigenvalues 2, 3, 4
NBETA, GAMMA = 10.0, 1.0
LOSS_MIN = np.array([0.5, -1.0, 0.25])  # m
CENTER = LOSS_MIN + np.array([0.3, 0.2, -0.4])  # w*


@dataclass(frozen=True)
class Target:
    """``blocks`` independent copies of the 3-dimensional Gaussian N(μ, Σ) above."""

    blocks: int
    center: np.ndarray = field(default_factory=CENTER.copy)
    loss_min: np.ndarray = field(default_factory=LOSS_MIN.copy)

    @property
    def precision(self) -> np.ndarray:
        return NBETA * HESSIAN + GAMMA * np.eye(DIM)

    @property
    def covariance(self) -> np.ndarray:
        return np.linalg.inv(self.precision)

    @property
    def mean(self) -> np.ndarray:
        return np.linalg.solve(self.precision, NBETA * HESSIAN @ self.loss_min
                               + GAMMA * self.center)

    def posterior(self, case: Any) -> LocalizedPosterior:
        """The localized posterior in ``case``'s backend; a batch is added gradient noise."""
        bk = case.backend
        center = case.asarray(np.tile(self.center, self.blocks))
        loss_min = case.asarray(np.tile(self.loss_min, self.blocks))
        hessian = case.asarray(HESSIAN)
        blocks = self.blocks

        def loss_and_grad(position: Any, batch: Any) -> tuple[Any, Any]:
            xp = bk.namespace(position)
            offset = xp.reshape(position - loss_min, (blocks, DIM))
            grad = offset @ hessian
            loss = 0.5 * xp.sum(offset * grad)
            grad = xp.reshape(grad, (-1,))
            return loss, grad if batch is None else grad + batch

        return LocalizedPosterior(loss_and_grad, center, NBETA, GAMMA, bk)

    def exact_draws(self, seed: int) -> np.ndarray:
        """(blocks, 3) exact draws of N(μ, Σ)."""
        rng = np.random.default_rng(seed)
        return self.mean + rng.standard_normal((self.blocks, DIM)) @ np.linalg.cholesky(
            self.covariance).T


@dataclass
class Run:
    draws: np.ndarray  # (chain = block, draw, coordinate)
    extras: dict[str, np.ndarray]  # per recorded step
    state: Any


def run(algorithm: SamplingAlgorithm, case: Any, target: Target, start: np.ndarray, *,
        steps: int, burnin: int, thin: int = 1, seed: int = 0, gradient_noise: float = 0.0,
        extras: dict[str, Callable[[Any], Any]] | None = None) -> Run:
    """Step ``algorithm`` ``burnin + steps`` times from ``start`` (blocks, 3); keep every
    ``thin``-th position after burn-in. ``gradient_noise`` σ adds σ·N(0, I) to ∇L."""
    bk = case.backend
    extras = extras or {}
    position = case.asarray(np.asarray(start, dtype=np.float64).ravel())
    state = algorithm.init(position)
    noise_key, batch_key = bk.split(bk.key(seed), 2)
    kept, recorded = [], {name: [] for name in extras}
    for step in range(burnin + steps):
        batch = (gradient_noise * bk.normal(bk.fold_in(batch_key, step), state.position)
                 if gradient_noise else None)
        state, _ = algorithm.step(bk.fold_in(noise_key, step), state, batch)
        if step >= burnin and (step - burnin) % thin == 0:
            kept.append(state.position)
            for name, extra in extras.items():
                recorded[name].append(extra(state))
    draws = case.to_numpy(bk.stack(kept)).astype(np.float64).reshape(len(kept), target.blocks,
                                                                     DIM)
    return Run(np.moveaxis(draws, 0, 1),
               {name: np.array([float(bk.to_numpy(v)) for v in values])
                for name, values in recorded.items()}, state)


def mcse(trace: np.ndarray) -> float:
    """MCSE of the mean of a (chain, draw) array from its bulk ESS (arviz-stats)."""
    return float(array_stats.mcse(np.asarray(trace, dtype=np.float64), chain_axis=0,
                                  draw_axis=1, method="mean"))


@dataclass
class Check:
    ok: bool
    message: str
    worst: float  # largest |error| / tolerance
    bias_over_mcse: float


def moments_check(draws: np.ndarray, target: Target, covariance_bias: np.ndarray) -> Check:
    """Mean and covariance of ``draws`` (chain, draw, 3) against N(μ, Σ), MCSE tolerances."""
    with np.errstate(divide="ignore"):  # a frozen chain has MCSE 0
        return _moments_check(draws, target, covariance_bias)


def _moments_check(draws: np.ndarray, target: Target, covariance_bias: np.ndarray) -> Check:
    mean, covariance = target.mean, target.covariance
    lines, worst, bias_ratio = [], 0.0, 0.0
    for i in range(DIM):
        error = draws[..., i].mean() - mean[i]
        tolerance = Z * mcse(draws[..., i])
        worst = max(worst, abs(error) / tolerance)
        lines.append(f"mean[{i}] err {error:+.4f} tol {tolerance:.4f}")
    centred = draws - mean
    for i in range(DIM):
        for j in range(i, DIM):
            product = centred[..., i] * centred[..., j]
            error = product.mean() - covariance[i, j]
            standard_error = mcse(product)
            tolerance = Z * standard_error + abs(covariance_bias[i, j])
            bias_ratio = max(bias_ratio, abs(covariance_bias[i, j]) / standard_error)
            worst = max(worst, abs(error) / tolerance)
            lines.append(f"cov[{i}{j}] err {error:+.4f} tol {tolerance:.4f} "
                         f"(bias {covariance_bias[i, j]:+.1e})")
    return Check(worst <= 1.0, "; ".join(lines) + f"; worst {worst:.2f}", worst, bias_ratio)


# ---- exact stationary covariances of the discretized (linear) samplers --------------------

def lyapunov(transition: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return scipy.linalg.solve_discrete_lyapunov(transition, noise)


def langevin_bias(target: Target, step: np.ndarray | float) -> np.ndarray:
    """Σ_ε − Σ of w' = w − (D/2) P (w − μ) + D^½ ξ with D = diag(step)."""
    step = np.broadcast_to(np.asarray(step, dtype=np.float64), (DIM,))
    transition = np.eye(DIM) - 0.5 * np.diag(step) @ target.precision
    return lyapunov(transition, np.diag(step)) - target.covariance


def sghmc_bias(target: Target, eta: float, alpha: float) -> np.ndarray:
    """v' = (1 − α) v − η P (w − μ) + √(2αη) ξ, w' = w + v'."""
    eye, hp = np.eye(DIM), eta * target.precision
    transition = np.block([[eye - hp, (1 - alpha) * eye], [-hp, (1 - alpha) * eye]])
    noise = 2 * alpha * eta * np.block([[eye, eye], [eye, eye]])
    return lyapunov(transition, noise)[:DIM, :DIM] - target.covariance


def sgnht_bias(target: Target, h: float, thermostat: float, momentum_noise: float
               ) -> tuple[np.ndarray, float]:
    """p' = (1 − ξh) p − h P (w − μ) + noise (variance q), w' = w + h p'; ξ fixed.

    Returns the position-covariance bias and the mean kinetic temperature pᵀp/d."""
    eye, hp = np.eye(DIM), h * target.precision
    transition = np.block([[eye - h * hp, h * (1 - thermostat * h) * eye],
                           [-hp, (1 - thermostat * h) * eye]])
    noise = momentum_noise * np.block([[h * h * eye, h * eye], [h * eye, eye]])
    stationary = lyapunov(transition, noise)
    return stationary[:DIM, :DIM] - target.covariance, float(np.trace(stationary[DIM:, DIM:])
                                                             / DIM)


# ---- deliberately broken samplers (negative controls) -------------------------------------

def sgld_without_half(posterior: LocalizedPosterior, step_size: float) -> SamplingAlgorithm:
    """SGLD with the ½ dropped from the drift: w − ε ∇U + √ε ξ (samples N(μ, Σ/2))."""
    bk = posterior.backend

    def step(key, state, batch, diagnose=False):
        _, _, drift = posterior.potential_gradient(state.position, batch)
        position = state.position - step_size * drift + math.sqrt(step_size) * bk.normal(
            key, state.position)
        return SGLDState(position), None

    return SamplingAlgorithm(SGLDState, step)


def rmsprop_unpreconditioned_noise(posterior: LocalizedPosterior, step_size: float
                                   ) -> SamplingAlgorithm:
    """RMSProp-SGLD whose noise is √ε ξ instead of √ε_t ξ."""
    inner = RMSPropSGLD(step_size).build(posterior)
    bk = posterior.backend

    def step(key, state, batch, diagnose=False):
        new, info = inner.step(key, state, batch)
        xp = bk.namespace(state.position)
        local = step_size / (xp.sqrt(new.square_avg / (1 - 0.99 ** new.count)) + 0.1)
        noise = bk.normal(key, state.position)
        return new._replace(position=new.position + (math.sqrt(step_size) - xp.sqrt(local))
                            * noise), info

    return SamplingAlgorithm(inner.init, step)


def sghmc_without_friction_noise(posterior: LocalizedPosterior, step_size: float,
                                 friction: float) -> SamplingAlgorithm:
    """SGHMC with friction but no injected noise: the chain freezes (a cold sampler)."""

    def step(key, state, batch, diagnose=False):
        _, _, drift = posterior.potential_gradient(state.position, batch)
        momentum = (1 - friction) * state.momentum - step_size * drift
        return SGHMCState(state.position + momentum, momentum), None

    return SamplingAlgorithm(lambda w: SGHMCState(w, w * 0), step)


def sgnht_frozen_thermostat(posterior: LocalizedPosterior, step_size: float, diffusion: float
                            ) -> SamplingAlgorithm:
    """devinterp 2.x's bug: the thermostat update is dropped (ξ stays at A)."""
    inner = SGNHT(step_size, diffusion).build(posterior)

    def step(key, state, batch, diagnose=False):
        new, info = inner.step(key, state, batch)
        return new._replace(thermostat=state.thermostat), info

    return SamplingAlgorithm(inner.init, step)


def kinetic_temperature(state: SGNHTState) -> Any:
    return (state.momentum * state.momentum).sum() / state.momentum.shape[0]


def sgnht_bias_bound(target: Target, h: float, diffusion: float, momentum_noise: float
                     ) -> np.ndarray:
    """|Σ_h − Σ| of SGNHT from the linear recursion with ξ at the thermostat's mean-field
    fixed point ξ*: the ξ whose stationary pᵀp/d is exactly 1, which the thermostat enforces
    (E[Δξ] = 0 at stationarity). The fluctuations of ξ (std ≈ 1/√d) change it by O(h/d)."""
    fixed_point = scipy.optimize.brentq(
        lambda xi: sgnht_bias(target, h, xi, momentum_noise)[1] - 1.0, 0.1 * diffusion,
        10.0 * diffusion + momentum_noise / h)
    return np.abs(sgnht_bias(target, h, fixed_point, momentum_noise)[0])


# ---- moments of every sampler on the product Gaussian -------------------------------------
# Chains start at w* (away from μ), so the check also covers convergence. Relaxation time of
# the slowest direction, in steps: SGLD 2/(ε P_min) = 250, SGHMC ≈ 40, SGNHT ≈ 400 (friction
# A = 0.5 at h = 0.005), RMSProp-SGLD 2/(ε_t P_min) ≈ 250.

BLOCKS = 200
SGLD_STEP = 0.004  # ε P_max / 4 = 0.4 %: covariance bias ≤ 0.004 Σ
SGHMC_ETA, SGHMC_ALPHA = 0.0015, 0.1
SGNHT_H, SGNHT_A = 0.005, 0.5  # kinetic-temperature bias of the Euler step ≈ A h / 2 = 0.13 %
RMSPROP_STEP = 0.05
RMSPROP_OFFSET = 1500.0  # scale of w* − m for the RMSProp target


def rmsprop_target() -> Target:
    """A target whose loss gradient A (w − m) ≈ A (μ − m) barely changes over the posterior
    (relative change ≈ σ / |μ − m| ≈ 5e-4), so the RMSProp preconditioner is nearly constant.

    Where the preconditioner follows the position (g ∝ w − m near m), RMSProp-SGLD without Li
    et al.'s Γ term samples ∝ e^{−U} (√v̂(w) + a), not e^{−U}: a known bias of the method,
    not tested here. In λ̂ estimation the minibatch noise dominates g near w*, which is the
    nearly-constant regime tested here."""
    return Target(BLOCKS, center=LOSS_MIN + RMSPROP_OFFSET * np.array([1.0, 0.6, -0.8]))


def rmsprop_preconditioner(target: Target, step_size: float, eps: float = 0.1) -> np.ndarray:
    """ε / (√E[g²] + a), with E[g²] = (A(μ − m))² + diag(A Σ A) at stationarity."""
    mean_grad = HESSIAN @ (target.mean - target.loss_min)
    square = mean_grad ** 2 + np.diag(HESSIAN @ target.covariance @ HESSIAN)
    return step_size / (np.sqrt(square) + eps)


CASES = {
    "sgld": {"build": lambda p: SGLD(SGLD_STEP).build(p), "steps": 16_000, "burnin": 3_000,
             "thin": 8, "bias": lambda t: langevin_bias(t, SGLD_STEP)},
    "sghmc": {"build": lambda p: SGHMC(SGHMC_ETA, SGHMC_ALPHA).build(p), "steps": 8_000,
              "burnin": 1_000, "thin": 4,
              "bias": lambda t: sghmc_bias(t, SGHMC_ETA, SGHMC_ALPHA)},
    "sgnht": {"build": lambda p: SGNHT(SGNHT_H, SGNHT_A).build(p), "steps": 30_000, "burnin": 2_000,
                  "thin": 10, "bias": lambda t: sgnht_bias_bound(t, SGNHT_H, SGNHT_A,
                                                           2 * SGNHT_A * SGNHT_H)},
    "rmsprop_sgld": {"build": lambda p: RMSPropSGLD(RMSPROP_STEP).build(p), "steps": 16_000,
                         "burnin": 3_000, "thin": 8, "target": rmsprop_target,
                         "start": lambda t: t.mean + 1.5,  # 2–3 σ off; w* is ≈ 1000 σ away
                         "bias": lambda t: langevin_bias(
                             t, rmsprop_preconditioner(t, RMSPROP_STEP))},
}

BROKEN = {
    "sgld-without-half": ("sgld", lambda p: sgld_without_half(p, SGLD_STEP)),
    "sghmc-without-friction-noise": (
        "sghmc", lambda p: sghmc_without_friction_noise(p, SGHMC_ETA, SGHMC_ALPHA)),
    "rmsprop-unpreconditioned-noise": (
        "rmsprop_sgld", lambda p: rmsprop_unpreconditioned_noise(p, RMSPROP_STEP)),
    "rmsprop-without-half": ("rmsprop_sgld", lambda p: RMSPropSGLD(RMSPROP_STEP).build(
        _doubled_drift(p))),
}


def _doubled_drift(posterior: LocalizedPosterior) -> LocalizedPosterior:
    """A posterior whose ∇U is doubled: any Langevin sampler on it has lost its ½."""

    class Doubled(LocalizedPosterior):
        def potential_gradient(self, position, batch):
            loss, grad, drift = super().potential_gradient(position, batch)
            return loss, grad, 2 * drift

        def evaluate(self, position, batch, keep_grad=True):
            here = super().evaluate(position, batch, keep_grad)
            return here._replace(drift=2 * here.drift)

    return Doubled(posterior.loss_and_grad, posterior.center, posterior.nbeta,
                   posterior.localization, posterior.backend)


def _moments(name: str, case: Any, build: Callable | None = None) -> Check:
    spec = CASES[name]
    target = spec.get("target", lambda: Target(BLOCKS))()
    algorithm = (build or spec["build"])(target.posterior(case))
    start = spec.get("start", lambda t: t.center)(target)
    result = run(algorithm, case, target, np.tile(start, (BLOCKS, 1)),
                 steps=spec["steps"], burnin=spec["burnin"], thin=spec["thin"])
    return moments_check(result.draws, target, spec["bias"](target))


@pytest.mark.statistical
@pytest.mark.parametrize("name", list(CASES))
def test_moments_on_a_gaussian(name: str, backend64: Any) -> None:
    if backend64.name in ("jax", "tensorflow"):
        pytest.skip(f"eager {backend64.name} steps take ~0.5 ms (16 000-32 000 steps per "
                    "sampler here): the update rule is checked exactly in every backend by "
                    "test_update_rule_in_every_backend, the statistics in NumPy/torch")
    check = _moments(name, backend64)
    assert check.bias_over_mcse < MAX_BIAS_OVER_MCSE, check.message
    assert check.ok, check.message


@pytest.mark.statistical
@pytest.mark.parametrize("variant", list(BROKEN))
def test_moments_check_fails_for_a_broken_sampler(variant: str, numpy_case: Any) -> None:
    name, build = BROKEN[variant]
    check = _moments(name, numpy_case, build)
    assert not check.ok, f"{variant} passed: {check.message}"


@pytest.fixture
def numpy_case() -> Any:
    from conftest import BackendCase

    return BackendCase("numpy", "cpu", "float64")


# ---- SGNHT: the thermostat acts -------------------------------------------------------------

GRADIENT_NOISE = 1.0  # σ on ∇L: extra momentum diffusion B = h (nβ σ)² / 2 = 0.25 = A / 2


def _sgnht_with_gradient_noise(case: Any, build: Callable) -> tuple[Run, Target]:
    target = Target(BLOCKS)
    extras = {"temperature": kinetic_temperature, "thermostat": lambda s: s.thermostat}
    result = run(build(target.posterior(case)), case, target,
                 np.tile(target.center, (BLOCKS, 1)), steps=30_000, burnin=3_000, thin=10,
                 gradient_noise=GRADIENT_NOISE, extras=extras, seed=5)
    return result, target


def _temperature_check(result: Run, target: Target) -> tuple[bool, bool, str]:
    temperature = result.extras["temperature"]
    error = temperature.mean() - 1.0  # exactly 0 at stationarity: E[Δξ] = 0
    tolerance = Z * mcse(temperature[None, :])
    momentum_noise = 2 * SGNHT_A * SGNHT_H + (SGNHT_H * NBETA * GRADIENT_NOISE) ** 2
    moments = moments_check(result.draws, target,
                            sgnht_bias_bound(target, SGNHT_H, SGNHT_A, momentum_noise))
    message = (f"pᵀp/d = {temperature.mean():.4f} (tol ±{tolerance:.4f}), mean ξ = "
               f"{result.extras['thermostat'].mean():.3f}; {moments.message}")
    return abs(error) <= tolerance, moments.ok, message


@pytest.mark.statistical
def test_sgnht_thermostat_absorbs_gradient_noise(numpy_case: Any) -> None:
    """Unknown gradient noise heats the momentum; ξ rises from A to ≈ A + B and brings the
    kinetic temperature back to 1, and the positions follow the target."""
    result, target = _sgnht_with_gradient_noise(
        numpy_case, lambda p: SGNHT(SGNHT_H, SGNHT_A).build(p))
    temperature_ok, moments_ok, message = _temperature_check(result, target)
    assert temperature_ok and moments_ok, message
    noise_diffusion = SGNHT_H * (NBETA * GRADIENT_NOISE) ** 2 / 2
    assert result.extras["thermostat"].mean() == pytest.approx(SGNHT_A + noise_diffusion,
                                                               rel=0.1), message


@pytest.mark.statistical
def test_sgnht_with_a_frozen_thermostat_fails(numpy_case: Any) -> None:
    """devinterp 2.x's bug (ξ never updated) samples too hot: pᵀp/d ≈ (A + B)/A = 1.5."""
    result, target = _sgnht_with_gradient_noise(
        numpy_case, lambda p: sgnht_frozen_thermostat(p, SGNHT_H, SGNHT_A))
    temperature_ok, moments_ok, message = _temperature_check(result, target)
    assert not temperature_ok and not moments_ok, message
    assert result.extras["temperature"].mean() == pytest.approx(1.5, rel=0.05), message


def test_sgnht_with_a_frozen_thermostat_is_sghmc(numpy_case: Any) -> None:
    """ξ fixed at A: SGNHT(h, A) is SGHMC(η = h², α = A h) with v = h p, step by step."""
    h, diffusion = 0.05, 0.8
    posterior = Target(2).posterior(numpy_case)
    frozen = sgnht_frozen_thermostat(posterior, h, diffusion)
    momentum = SGHMC(h * h, diffusion * h).build(posterior)
    start = np.tile(CENTER, 2) + 0.3
    a, b = frozen.init(start), momentum.init(start)
    for step in range(50):
        a, _ = frozen.step(step, a, None)
        b, _ = momentum.step(step, b, None)
    np.testing.assert_allclose(a.position, b.position, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h * a.momentum, b.momentum, rtol=1e-12, atol=1e-12)
    real = SGNHT(h, diffusion).build(posterior)
    c = real.init(start)
    for step in range(50):
        c, _ = real.step(step, c, None)
    assert not np.allclose(c.position, a.position)  # the real thermostat moved


def test_sghmc_with_full_friction_is_sgld(numpy_case: Any) -> None:
    """α = 1: v' = −η ∇U + √(2η) ξ, so w' = w − η ∇U + √(2η) ξ, SGLD with ε = 2η."""
    posterior = Target(2).posterior(numpy_case)
    first, second = SGHMC(0.01, 1.0).build(posterior), SGLD(0.02).build(posterior)
    start = np.tile(CENTER, 2) - 0.2
    a, b = first.init(start), second.init(start)
    for step in range(50):
        a, _ = first.step(step, a, None)
        b, _ = second.step(step, b, None)
    np.testing.assert_allclose(a.position, b.position, rtol=1e-12, atol=1e-12)


# ---- MALA: exact acceptance, exact stationarity --------------------------------------------

MALA_STEP = 0.4  # ε P_max = 1.6: unadjusted Langevin inflates the variance up to 1/(1 − 0.4)
MALA_CHAINS, MALA_STEPS = 100, 300


def mala_without_hastings(posterior: LocalizedPosterior, step_size: float
                          ) -> SamplingAlgorithm:
    """MALA whose accept test forgets the proposal densities: min(1, e^{U(w) − U(w')})."""
    bk = posterior.backend

    def step(key, state, batch, diagnose=False):
        position = state.position
        proposal_key, first_key, second_key = bk.split(key, 3)
        loss, _, drift = posterior.potential_gradient(position, batch)
        proposal = position - 0.5 * step_size * drift + math.sqrt(step_size) * bk.normal(
            proposal_key, position)
        proposal_loss, _, _ = posterior.potential_gradient(proposal, batch)
        log_ratio = posterior.potential(position, loss) - posterior.potential(proposal,
                                                                              proposal_loss)
        zero = position.sum() * 0
        first, second = bk.normal(first_key, zero), bk.normal(second_key, zero)
        accept = log_ratio + 0.5 * (first * first + second * second) > 0
        return MALAState(np.where(accept, proposal, position)), None

    return SamplingAlgorithm(MALAState, step)


def _from_exact_draws(case: Any, build: Callable, *, diagnose: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chain, draw, 3) positions of ``MALA_CHAINS`` one-block chains started from exact
    draws of the target, and the per-step acceptance probabilities and accept indicators."""
    target = Target(1)
    algorithm = build(target.posterior(case))
    bk = case.backend
    starts = Target(MALA_CHAINS).exact_draws(seed=3)  # one exact draw of N(μ, Σ) per chain
    draws = np.empty((MALA_CHAINS, MALA_STEPS, DIM))
    acceptance = np.full((MALA_CHAINS, MALA_STEPS), np.nan)
    moved = np.zeros((MALA_CHAINS, MALA_STEPS), dtype=bool)
    for chain in range(MALA_CHAINS):
        key = bk.fold_in(bk.key(21), chain)
        state = algorithm.init(case.asarray(starts[chain]))
        for step in range(MALA_STEPS):
            before = case.to_numpy(state.position)
            state, info = algorithm.step(bk.fold_in(key, step), state, None, diagnose)
            draws[chain, step] = case.to_numpy(state.position)
            moved[chain, step] = not np.array_equal(before, draws[chain, step])
            if diagnose:
                acceptance[chain, step] = float(case.to_numpy(info.mala_acceptance))
    return draws, acceptance, moved


@pytest.fixture(scope="module")
def mala_run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from conftest import BackendCase

    return _from_exact_draws(BackendCase("numpy", "cpu", "float64"),
                             lambda p: MALA(MALA_STEP).build(p), diagnose=True)


@pytest.mark.statistical
def test_mala_keeps_the_target_at_a_large_step(mala_run: Any) -> None:
    """Started from exact draws, MALA's draws keep N(μ, Σ) (no bias: the tolerance is the
    MCSE alone) at a step where unadjusted Langevin is visibly biased (next test)."""
    draws, acceptance, _ = mala_run
    check = moments_check(draws, Target(1), np.zeros((DIM, DIM)))
    assert check.ok, check.message
    assert 0.3 < np.nanmean(acceptance) < 0.95  # a large step, but the chain moves


@pytest.mark.statistical
@pytest.mark.parametrize("variant", ["sgld", "mala-without-hastings"])
def test_unadjusted_or_wrong_acceptance_fails_at_that_step(variant: str, numpy_case: Any
                                                           ) -> None:
    build = ((lambda p: SGLD(MALA_STEP).build(p)) if variant == "sgld"
             else (lambda p: mala_without_hastings(p, MALA_STEP)))
    draws, _, _ = _from_exact_draws(numpy_case, build)
    check = moments_check(draws, Target(1), np.zeros((DIM, DIM)))
    assert not check.ok, f"{variant} passed: {check.message}"


@pytest.mark.statistical
def test_mala_accepts_with_its_reported_probability(mala_run: Any) -> None:
    """The accept rule −log u = (z₁² + z₂²)/2 ~ Exp(1) accepts with probability a_t: the
    accepted fraction matches the mean reported acceptance within Z standard errors."""
    _, acceptance, moved = mala_run
    difference = moved.astype(float) - acceptance  # mean 0, variance E[a (1 − a)] per step
    standard_error = math.sqrt(np.mean(acceptance * (1 - acceptance)) / acceptance.size)
    assert abs(difference.mean()) < Z * standard_error, (moved.mean(), acceptance.mean())


def test_mala_step_by_hand(numpy_case: Any) -> None:
    """One MALA step against a hand computation with scipy's Gaussian densities."""
    from scipy.stats import multivariate_normal

    target = Target(1)
    posterior = target.posterior(numpy_case)
    bk = numpy_case.backend
    step_size = 0.3
    algorithm = MALA(step_size).build(posterior)
    start = target.mean + np.array([0.4, -0.3, 0.2])

    def potential(w: np.ndarray) -> float:
        offset = w - LOSS_MIN
        return NBETA * 0.5 * offset @ HESSIAN @ offset + 0.5 * GAMMA * np.sum((w - CENTER) ** 2)

    def grad_potential(w: np.ndarray) -> np.ndarray:
        return NBETA * HESSIAN @ (w - LOSS_MIN) + GAMMA * (w - CENTER)

    accepted = rejected = 0
    for seed in range(40):
        key = bk.key(seed)
        state, info = algorithm.step(key, algorithm.init(start.copy()), None, diagnose=True)
        proposal_key, first_key, second_key = bk.split(key, 3)
        proposal = (start - 0.5 * step_size * grad_potential(start)
                    + math.sqrt(step_size) * bk.normal(proposal_key, start))
        forward = multivariate_normal(start - 0.5 * step_size * grad_potential(start),
                                      step_size * np.eye(DIM)).logpdf(proposal)
        backward = multivariate_normal(proposal - 0.5 * step_size * grad_potential(proposal),
                                       step_size * np.eye(DIM)).logpdf(start)
        log_ratio = potential(start) - potential(proposal) + backward - forward
        probability = min(1.0, math.exp(log_ratio))
        assert float(info.mala_acceptance) == pytest.approx(probability, rel=1e-10, abs=1e-12)
        loss, _, drift = posterior.potential_gradient(start, None)
        assert float(posterior.langevin_acceptance(step_size, start, loss, drift, proposal, None)
                     ) == pytest.approx(probability, rel=1e-10, abs=1e-12)
        zero = np.float64(0.0)
        uniform = math.exp(-0.5 * (float(bk.normal(first_key, zero)) ** 2
                                   + float(bk.normal(second_key, zero)) ** 2))
        expected = proposal if uniform < probability else start
        np.testing.assert_allclose(state.position, expected, rtol=1e-13)
        accepted += uniform < probability
        rejected += uniform >= probability
        assert float(info.loss) == pytest.approx(0.5 * (start - LOSS_MIN) @ HESSIAN
                                                 @ (start - LOSS_MIN), rel=1e-12)
    assert accepted and rejected  # both branches were exercised


def test_mala_rejects_a_non_finite_proposal(numpy_case: Any) -> None:
    def loss_and_grad(position, batch):
        bad = np.any(np.abs(position) > 5)
        return (np.float64(np.inf) if bad else 0.5 * position @ position), position

    posterior = LocalizedPosterior(loss_and_grad, np.zeros(3), 1.0, 0.0, numpy_case.backend)
    algorithm = MALA(1e4).build(posterior)  # every proposal lands far away
    state = algorithm.init(np.full(3, 0.1))
    for step in range(5):
        state, info = algorithm.step(step, state, None, diagnose=True)
        assert float(info.mala_acceptance) == 0.0
    np.testing.assert_array_equal(state.position, np.full(3, 0.1))


# ---- RMSProp-SGLD: the statistics by hand ---------------------------------------------------

def _gradient_replay_posterior(case: Any) -> LocalizedPosterior:
    """A posterior whose loss gradient is the batch itself (a replayed gradient sequence)."""
    bk = case.backend
    return LocalizedPosterior(lambda w, batch: (bk.namespace(w).sum(w * 0), batch),
                              case.asarray(np.zeros(2)), 2.0, 0.5, bk)


GRADIENTS = (np.array([1.0, 2.0]), np.array([3.0, -1.0]))
START = np.array([1.0, -1.0])


def _replay(case: Any, settings: RMSPropSGLD) -> tuple[list[Any], list[np.ndarray]]:
    bk = case.backend
    algorithm = settings.build(_gradient_replay_posterior(case))
    state = algorithm.init(case.asarray(START))
    states, noises = [], []
    for t, gradient in enumerate(GRADIENTS):
        key = bk.fold_in(bk.key(0), t)
        noises.append(case.to_numpy(bk.normal(key, state.position)))
        state, _ = algorithm.step(key, state, case.asarray(gradient))
        states.append(state)
    return states, noises


def _expected_positions(v_hats: list[np.ndarray], noises: list[np.ndarray], eps: float,
                        a: float) -> list[np.ndarray]:
    w, positions = START.copy(), []
    for v_hat, gradient, noise in zip(v_hats, GRADIENTS, noises):
        local = eps / (np.sqrt(v_hat) + a)
        w = w - local / 2 * (0.5 * w + 2.0 * gradient) + np.sqrt(local) * noise
        positions.append(w)
    return positions


def test_rmsprop_bias_corrected_statistics_by_hand(backend64: Any) -> None:
    """v₀ = 1, b₂ = 0.99, g₁ = (1, 2), g₂ = (3, −1):
    v₁ = (1.00, 1.03), v̂₁ = v₁ / 0.01 = (100, 103);
    v₂ = 0.99 v₁ + 0.01 g₂² = (1.08, 1.0297), v̂₂ = v₂ / (1 − 0.99²) = v₂ / 0.0199."""
    states, noises = _replay(backend64, RMSPropSGLD(step_size=0.01))
    to_np = backend64.to_numpy
    np.testing.assert_allclose(to_np(states[0].square_avg), [1.00, 1.03], rtol=1e-12)
    np.testing.assert_allclose(to_np(states[1].square_avg), [1.08, 1.0297], rtol=1e-12)
    assert float(to_np(states[1].count)) == 2.0
    v_hats = [np.array([100.0, 103.0]), np.array([1.08, 1.0297]) / 0.0199]
    expected = _expected_positions(v_hats, noises, 0.01, 0.1)
    for state, position in zip(states, expected):
        np.testing.assert_allclose(to_np(state.position), position, rtol=1e-12)
    # without the correction the same gradients give 10× larger first steps
    uncorrected, noises = _replay(backend64, RMSPropSGLD(step_size=0.01, bias_correction=False))
    expected = _expected_positions([np.array([1.00, 1.03]), np.array([1.08, 1.0297])], noises,
                                   0.01, 0.1)
    np.testing.assert_allclose(to_np(uncorrected[1].position), expected[1], rtol=1e-12)
    assert not np.allclose(to_np(uncorrected[1].position), to_np(states[1].position))


def test_rmsprop_devinterp_variant_by_hand(backend64: Any) -> None:
    """V₀ = 0, a = 0.1, b₂ = 0.99, no correction: v₁ = 0.01 g₁² = (0.01, 0.04),
    v₂ = 0.99 v₁ + 0.01 g₂² = (0.0999, 0.0496); ε_t = ε / (√v_t + 0.1)."""
    settings = RMSPropSGLD(step_size=0.01, devinterp_variant=True)
    assert (settings.beta2, settings.eps_stability, settings.bias_correction,
            settings.initial_square_avg) == (0.99, 0.1, False, 0.0)
    states, noises = _replay(backend64, settings)
    to_np = backend64.to_numpy
    np.testing.assert_allclose(to_np(states[0].square_avg), [0.01, 0.04], rtol=1e-12)
    np.testing.assert_allclose(to_np(states[1].square_avg), [0.0999, 0.0496], rtol=1e-12)
    expected = _expected_positions([np.array([0.01, 0.04]), np.array([0.0999, 0.0496])],
                                   noises, 0.01, 0.1)
    for state, position in zip(states, expected):
        np.testing.assert_allclose(to_np(state.position), position, rtol=1e-12)


def test_rmsprop_preconditioned_acceptance(numpy_case: Any) -> None:
    """The diagnostic scores the move under N(w − (ε_t/2)∇U, diag ε_t) with ε_t fixed."""
    from scipy.stats import multivariate_normal

    target = Target(1)
    posterior = target.posterior(numpy_case)
    algorithm = RMSPropSGLD(0.05).build(posterior)
    start = target.mean + 0.2
    state = algorithm.init(start)
    state, info = algorithm.step(7, state, None, diagnose=True)
    loss, grad, drift = posterior.potential_gradient(start, None)
    v_hat = (0.99 + 0.01 * grad ** 2) / 0.01
    local = 0.05 / (np.sqrt(v_hat) + 0.1)
    proposal = state.position
    proposal_loss, _, proposal_drift = posterior.potential_gradient(proposal, None)
    forward = multivariate_normal(start - local / 2 * drift, np.diag(local)).logpdf(proposal)
    backward = multivariate_normal(proposal - local / 2 * proposal_drift,
                                   np.diag(local)).logpdf(start)
    log_ratio = (posterior.potential(start, loss) - posterior.potential(proposal, proposal_loss)
                 + backward - forward)
    assert float(info.mala_acceptance) == pytest.approx(min(1.0, math.exp(log_ratio)),
                                                        rel=1e-10)


# ---- every sampler in every backend: the update rule, the state, the info -------------------

def _grad_u(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∇L, ∇U) of Target(2) in float64."""
    blocks = w.reshape(2, DIM)
    grad = ((blocks - LOSS_MIN) @ HESSIAN).ravel()
    return grad, NBETA * grad + GAMMA * (w - np.tile(CENTER, 2))


def _potential(x: np.ndarray) -> float:
    """U of Target(2) in float64."""
    offset = x.reshape(2, DIM) - LOSS_MIN
    return (NBETA * 0.5 * np.sum(offset * (offset @ HESSIAN))
            + 0.5 * GAMMA * np.sum((x - np.tile(CENTER, 2)) ** 2))


def _langevin_acceptance(w: np.ndarray, step: float, noise: np.ndarray) -> float:
    """min(1, r) of the Langevin move w → w − (ε/2)∇U + √ε ξ on Target(2)."""
    drift = _grad_u(w)[1]
    proposal = w - step / 2 * drift + math.sqrt(step) * noise
    proposal_drift = _grad_u(proposal)[1]
    forward = proposal - w + step / 2 * drift
    backward = w - proposal + step / 2 * proposal_drift
    log_ratio = (_potential(w) - _potential(proposal)
                 + (forward @ forward - backward @ backward) / (2 * step))
    return min(1.0, math.exp(log_ratio))


def _reference_step(name: str, state: tuple[np.ndarray, ...], noise: Callable[..., np.ndarray]
                    ) -> tuple[np.ndarray, ...]:
    """One step of each update rule, written out in NumPy from docs/design.md §2."""
    w = state[0]
    grad, drift = _grad_u(w)
    if name == "rmsprop_sgld":
        v, t = state[1], state[2] + 1
        v = 0.99 * v + 0.01 * grad ** 2
        local = 0.02 / (np.sqrt(v / (1 - 0.99 ** t)) + 0.1)
        return (w - local / 2 * drift + np.sqrt(local) * noise(), v, t)
    if name == "sghmc":
        p = 0.8 * state[1] - 0.01 * drift + math.sqrt(2 * 0.2 * 0.01) * noise()
        return (w + p, p)
    if name == "sgnht":
        h, diffusion, xi = 0.05, 0.7, state[2]
        p = state[1] - xi * state[1] * h - drift * h + math.sqrt(2 * diffusion * h) * noise()
        return (w + p * h, p, xi + (p @ p / w.size - 1) * h)
    if name == "mala":
        proposal = w - 0.05 * drift + math.sqrt(0.1) * noise(0)
        _, proposal_drift = _grad_u(proposal)

        def potential(x: np.ndarray) -> float:
            offset = x.reshape(2, DIM) - LOSS_MIN
            return (NBETA * 0.5 * np.sum(offset * (offset @ HESSIAN))
                    + 0.5 * GAMMA * np.sum((x - np.tile(CENTER, 2)) ** 2))

        forward = proposal - w + 0.05 * drift
        backward = w - proposal + 0.05 * proposal_drift
        log_ratio = potential(w) - potential(proposal) + (forward @ forward
                                                          - backward @ backward) / 0.2
        exponential = 0.5 * (noise(1) ** 2 + noise(2) ** 2)
        return (proposal if log_ratio + exponential > 0 else w,)
    raise AssertionError(name)


SETTINGS = {
    "rmsprop_sgld": RMSPropSGLD(step_size=0.02),
    "sghmc": SGHMC(step_size=0.01, friction=0.2),
    "sgnht": SGNHT(step_size=0.05, diffusion=0.7),
    "mala": MALA(step_size=0.1),
}
STATES = {"rmsprop_sgld": RMSPropSGLDState, "sghmc": SGHMCState, "sgnht": SGNHTState,
          "mala": MALAState}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_update_rule_in_every_backend(name: str, backend: Any) -> None:
    """Ten steps, each checked against the NumPy reference fed with the sampler's own noise;
    the state is a NamedTuple of backend arrays with ``position`` first; the info describes
    the pre-step point."""
    bk = backend.backend
    target = Target(2)
    posterior = target.posterior(backend)
    algorithm = SETTINGS[name].build(posterior)
    state = algorithm.init(backend.asarray(np.tile(target.mean, 2) + 0.3))
    assert isinstance(state, STATES[name]) and state._fields[0] == "position"
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if backend.dtype == "float64" else \
        {"rtol": 2e-4, "atol": 2e-5}
    for step in range(10):
        assert all(bk.is_array(field) for field in state), state
        key = bk.fold_in(bk.key(3), step)
        before = tuple(np.asarray(backend.to_numpy(f), dtype=np.float64) for f in state)
        zero = bk.namespace(state.position).sum(state.position * 0)

        def noise(index: int | None = None, key: Any = key, state: Any = state,
                  zero: Any = zero) -> np.ndarray:
            if index is None:
                return np.asarray(backend.to_numpy(bk.normal(key, state.position)), np.float64)
            sub = bk.split(key, 3)[index]
            like = state.position if index == 0 else zero
            return np.asarray(backend.to_numpy(bk.normal(sub, like)), np.float64)

        expected = _reference_step(name, before, noise)
        diagnose = step % 2 == 0
        state, info = algorithm.step(key, state, None, diagnose)
        for got, want in zip(state, expected):
            np.testing.assert_allclose(backend.to_numpy(got), want, **tolerance)
        assert isinstance(info, SampleInfo)
        grad, _ = _grad_u(before[0])
        np.testing.assert_allclose(float(backend.to_numpy(info.grad_norm)),
                                   np.linalg.norm(grad), **tolerance)
        np.testing.assert_allclose(float(backend.to_numpy(info.distance)),
                                   np.linalg.norm(before[0] - np.tile(CENTER, 2)), **tolerance)
        if not diagnose:
            assert info.mala_acceptance is None
        elif name in ("sghmc", "sgnht"):  # a Langevin probe at ε_c on a noise of its own
            probe = {"sghmc": 2 * 0.01 / (2 - 0.2), "sgnht": 0.05**2}[name]
            probe_noise = np.asarray(backend.to_numpy(
                bk.normal(bk.fold_in(key, 1), backend.asarray(before[0]))), np.float64)
            want = _langevin_acceptance(before[0], probe, probe_noise)
            np.testing.assert_allclose(float(backend.to_numpy(info.mala_acceptance)), want,
                                       **tolerance)
        else:
            assert 0.0 <= float(backend.to_numpy(info.mala_acceptance)) <= 1.0


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_kernels_take_their_hyperparameters_as_keyword_arguments(name: str) -> None:
    """One representation: the registry's class carries the kernel, whose keyword-only
    arguments are exactly what ``kernel_arguments()`` passes (so a compiled program takes them
    as arguments)."""
    sampler = SAMPLERS[name](step_size=0.01)
    parameters = inspect.signature(type(sampler).step).parameters
    positional = [p for p, v in parameters.items() if v.kind is v.POSITIONAL_OR_KEYWORD]
    keyword = {p for p, v in parameters.items() if v.kind is v.KEYWORD_ONLY}
    assert positional == ["posterior", "key", "state", "batch"]
    assert keyword == set(sampler.kernel_arguments())


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_the_check_runs_only_when_diagnosing(name: str, numpy_case: Any) -> None:
    """The acceptance diagnostic is a wrapper: without ``diagnose`` the kernel's check is never
    called, so a step costs one gradient (two for MALA, whose move needs the proposal's)."""
    from dataclasses import replace

    exact = Target(1).posterior(numpy_case)
    calls = {"gradients": 0}

    def counted(*args: Any) -> Any:
        calls["gradients"] += 1
        return exact.loss_and_grad(*args)

    posterior = replace(exact, loss_and_grad=counted)
    algorithm = SAMPLERS[name](step_size=1e-3).build(posterior)
    state = algorithm.init(np.full(DIM, 0.1))
    own = 2 if name == "mala" else 1
    for diagnose, gradients in ((False, own), (True, 2)):
        calls["gradients"] = 0
        _, info = algorithm.step(3, state, None, diagnose)
        assert calls["gradients"] == gradients
        assert (info.mala_acceptance is not None) == diagnose
        if diagnose:
            assert 0.0 <= float(info.mala_acceptance) <= 1.0


# ---- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("sgld", SGLD), ("rmsprop_sgld", RMSPropSGLD),
                                       ("sghmc", SGHMC), ("sgnht", SGNHT), ("mala", MALA)])
def test_samplers_by_name(name: str, cls: type) -> None:
    settings = get_sampler(name, step_size=0.01)
    assert isinstance(settings, cls) and settings.name == name
    assert settings.step_size == 0.01
    assert settings.settings()["step_size"] == 0.01 and settings.settings()["name"] == name
    assert get_sampler(settings) is settings


def test_default_settings() -> None:
    assert RMSPropSGLD(0.1).settings() == {
        "step_size": 0.1, "beta2": 0.99, "eps_stability": 0.1, "bias_correction": True,
        "devinterp_variant": False, "name": "rmsprop_sgld"}
    assert SGHMC(0.1).friction == 0.1 and SGNHT(0.1).diffusion is None
    assert SGNHT(0.1).resolved_diffusion == pytest.approx(1.0)  # A = 0.1 / h
    assert SGNHT(0.01).settings()["diffusion"] == pytest.approx(10.0)
    assert SGNHT(0.01, diffusion=2.0).settings()["diffusion"] == 2.0


@pytest.mark.parametrize("make, argument, error", [
    (lambda: RMSPropSGLD(0.0), "step_size", ValueError),
    (lambda: RMSPropSGLD(0.1, beta2=1.0), "beta2", ValueError),
    (lambda: RMSPropSGLD(0.1, beta2=-0.1), "beta2", ValueError),
    (lambda: RMSPropSGLD(0.1, eps_stability=0.0), "eps_stability", ValueError),
    (lambda: RMSPropSGLD(0.1, bias_correction=1), "bias_correction", TypeError),
    (lambda: RMSPropSGLD(0.1, devinterp_variant="yes"), "devinterp_variant", TypeError),
    (lambda: RMSPropSGLD(0.1, bias_correction=True, devinterp_variant=True), "bias_correction",
     ValueError),
    (lambda: RMSPropSGLD(0.1, eps_stability=1e-8, devinterp_variant=True), "eps_stability",
     ValueError),
    (lambda: SGHMC(-1.0), "step_size", ValueError),
    (lambda: SGHMC(0.1, friction=0.0), "friction", ValueError),
    (lambda: SGHMC(0.1, friction=1.5), "friction", ValueError),
    (lambda: SGHMC(0.1, friction="a"), "friction", TypeError),
    (lambda: SGNHT(float("nan")), "step_size", ValueError),
    (lambda: SGNHT(0.1, diffusion=0.0), "diffusion", ValueError),
    (lambda: MALA(True), "step_size", TypeError),
])
def test_settings_are_validated(make: Callable, argument: str, error: type) -> None:
    with pytest.raises(error, match=f"`{argument}`"):
        make()


def test_settings_are_frozen() -> None:
    from dataclasses import FrozenInstanceError, replace

    settings = RMSPropSGLD(0.1, devinterp_variant=True)
    with pytest.raises(FrozenInstanceError):
        settings.step_size = 1.0  # type: ignore[misc]
    assert replace(settings, step_size=0.2).eps_stability == 0.1


# ---- end to end through llc.estimate -------------------------------------------------------

# LinearRegression(3, 2) (d = 6, λ = 3), n = 2000 (nβ = n / log n ≈ 263), batch 200,
# 4 chains × 2000 draws after 500 burn-in steps, same-minibatch baseline, seed 0.
E2E = {"num_chains": 4, "num_draws": 2000, "num_burnin": 500, "seed": 0, "progress": False,
           "baseline": "minibatch", "batch_size": 200}
E2E_CASES = {
    "rmsprop_sgld": {"sampler": "rmsprop_sgld", "step_size": 5e-5},
    "sghmc": {"sampler": "sghmc", "step_size": 5e-5},
    "sgnht": {"sampler": "sgnht", "step_size": 1e-2},
    "sgnht-settings": {"sampler": SGNHT(step_size=5e-3, diffusion=10.0)},
    "mala": {"sampler": "mala", "step_size": 1e-3, "batch_size": 2000},  # full batch: exact
}


@pytest.mark.statistical
@pytest.mark.parametrize("case", list(E2E_CASES))
def test_estimate_recovers_d_over_2(case: str) -> None:
    from llc.problems import LinearRegression

    problem = LinearRegression(3, 2)
    data, params = problem.setup(2000, seed=0)
    result = llc.estimate(problem.loss_and_grad, params, data, **{**E2E, **E2E_CASES[case]})
    message = f"λ̂ = {result.llc_mean:.3f} ± {result.llc_mcse:.3f}"
    assert 4 * result.llc_mcse < 0.15 * problem.true_lambda, message
    assert abs(result.llc_mean / problem.true_lambda - 1) < 0.15, message
    assert not result.failed_chains.any()
    settings = E2E_CASES[case]["sampler"]
    name = settings if isinstance(settings, str) else settings.name
    assert result.attrs["sampler"] == name
