"""Health checks of an :class:`~llc.LLCResult` that explain themselves.

:func:`check_health` runs a fixed list of checks on a result and returns one
:class:`Finding` per problem it sees: a stable code, what went wrong with the numbers, the
chains concerned and a concrete change to make. :func:`warn_findings` turns findings into
:class:`LLCHealthWarning` warnings. Every threshold lives in :class:`HealthThresholds`, with
the reason for its value; pass your own instance to change any of them.

===========================  =====================================================
code                         fires when
===========================  =====================================================
``negative-llc``             λ̂ (or a chain's mean) is below 0 by more than 2 MCSE
``llc-above-max``            λ̂ exceeds d/2 (the largest λ a minimum can have) by 5 %
                             plus 2 MCSE
``non-finite``               a chain diverged (non-finite loss or parameters) or raised
``high-rhat``                R-hat > 1.01 over ≥ 2 healthy chains
``low-ess``                  bulk or tail ESS < 100 per healthy chain
``drift-after-burnin``       the first 10 % of the draws differ from the last 50 % by
                             more than 3.5 standard errors (Geweke's test)
``low-mala-acceptance``      mean MALA acceptance < 0.9 (pooled or for a chain)
``step-too-small``           MALA acceptance ≥ 0.999, the step's estimated bias below
                             2 % of λ̂, and the chains mix slowly or still diffuse like
                             a free random walk
``not-critical-point``       the variance over the draws of the first-order term
                             nβ ∇L_n(w*)·(w − w*) exceeds 10 % of max(1, |λ̂|)
``chain-means-disagree``     the chains' means spread more than 2× what their own MCSEs
                             allow (χ² test, p < 0.001): the autocorrelation MCSE is too
                             small
``stochastic-loss``          ``loss_fn`` gave two different values on one batch at w*
``num-data-mismatch``        the batches of one pass over an iterable (two or more)
                             held a number of rows other than ``num_data``
``fixed-order-batches``      an iterable yields the same batches on every pass, so the
                             trace's separate pass is not independent of the chain
===========================  =====================================================

The statistics (R-hat, ESS, MCSE) come from arviz-stats, through the result's properties
for the whole estimate and :mod:`arviz_stats.base.array_stats` for parts of the trace. This
module imports no deep-learning framework.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bias import estimated_step_bias, noise_share
from ._precision import swamps_acceptance
from ._engine.adapt import _BIAS_TARGET
from ._errors import ChainFailureWarning, Finding, LLCHealthWarning
from .samplers import (langevin_equivalent_step, langevin_noise_equivalent_step,
                       settings_from_attrs, step_exponent)

if TYPE_CHECKING:  # pragma: no cover
    from .result import LLCResult

__all__ = ["CHECKS", "ChainFailureWarning", "Finding", "HealthThresholds", "LLCHealthWarning",
           "check_health", "warn_findings"]


@dataclass(frozen=True)
class HealthThresholds:
    """The thresholds of :func:`check_health`, each with the reason for its default.

    Attributes
    ----------
    significance_z
        2.0: λ̂ must be beyond a bound by this many MCSE before ``negative-llc`` or
        ``llc-above-max`` fires (about a 2.3 % one-sided false-alarm rate for a normal
        MCSE), so that Monte Carlo noise alone does not trigger them.
    max_llc_margin
        0.05: ``llc-above-max`` fires only above (1 + 0.05) · d/2. λ ≤ d/2 at any minimum,
        but a well-sized SGLD step still overshoots it a little on regular models
        (+3.0 % on the regular known-λ problem, up to +4.4 % across the suite,
        docs/benchmarks.md); the margin keeps that benign bias from being reported.
    max_rhat
        1.01: the rank-normalized split-R-hat bound recommended by Vehtari et al. (2021,
        "Rank-normalization, folding, and localization", §4).
    min_ess_per_chain
        100: bulk and tail ESS per healthy chain below which MCSE and R-hat estimates
        themselves are unreliable (Vehtari et al. 2021 ask for ESS > 100 per chain, i.e. 400
        for the default 4 chains).
    drift_first, drift_last
        0.1 and 0.5: the fractions of the post-burn-in draws compared by the drift test,
        Geweke's (1992) defaults: the first 10 % is where an unfinished burn-in shows, the
        last 50 % is a stable reference.
    drift_z
        3.5: |z| of the difference of the two means over its standard error (MCSEs of the
        two parts, arviz-stats) above which ``drift-after-burnin`` fires. On stationary
        AR(1) traces (φ ≤ 0.98, 4 chains) |z| > 3.5 happened in ≤ 0.5 % of runs with ≥ 300
        draws per chain and ≤ 2.3 % with 100; |z| > 3 in up to 4 %, too often for a warning
        that every call may emit.
    drift_min_draws
        100: fewer draws per chain leave the first segment with < 10 draws, too few for an
        MCSE; the drift test is then skipped (``low-ess`` covers such runs).
    min_mala_acceptance
        0.9: mean MALA acceptance below which ``low-mala-acceptance`` fires, the lower end
        of the well-sized range 0.90–0.95 (docs/design.md §2). Lower acceptance came with
        λ̂ biased far upward on the known-λ problems (docs/benchmarks.md); the threshold is
        not higher because, for Gaussian targets, 1 − acceptance grows like √d at a fixed
        per-coordinate bias, so larger models have lower acceptance at the same accuracy.
    target_mala_acceptance
        0.95: the acceptance the suggested smaller step aims for (inside the well-sized range,
        with a margin above ``min_mala_acceptance``). The suggestion assumes 1 − acceptance
        grows in proportion to the step size, the steepest growth measured at moderate
        acceptance (docs/trust.md, "Why the thresholds"), so it errs on the small side.
    step_too_small_acceptance
        0.999: ``step-too-small`` needs the mean acceptance above this: well above what
        well-sized steps of the known-λ suite give, so that they are not flagged (docs/trust.md,
        "Why the thresholds").
    room_acceptance
        0.99: a mean acceptance above this leaves room for a larger step: ``low-ess`` then
        suggests one, and the larger step suggested by ``step-too-small`` aims for it
        (assuming 1 − acceptance ∝ ε^1.5, the slowest growth measured, so the suggested step
        errs on the small side).
    diffusion_ratio
        0.5: with acceptance that high, ``step-too-small`` also needs slow mixing: bulk ESS
        below ``min_ess_per_chain`` per chain, or ‖w − w*‖² over the last half of the draws
        (pooled over chains) at least 0.5 of a free random walk's t·ε·d after t steps. For an
        Ornstein–Uhlenbeck coordinate with relaxation time τ the ratio is
        (1 − e^{−2t/τ})/(2t/τ), which is ≥ 0.5 only when t ≲ 0.8 τ: the run is shorter than
        one relaxation time and the potential has barely acted. The ratio alone is no
        verdict: in singular models the flat directions (held only by the localization) keep
        diffusing at any sensible step (docs/trust.md, "Why the thresholds"), hence the
        acceptance condition as well.
    max_first_order
        0.1: ``not-critical-point`` fires when the variance of the first-order term
        F = nβ ∇L_n(w*)·(w_t − w*) over the draws (recorded at every draw: one dot product)
        exceeds this fraction of max(1, |λ̂|). Around a quadratic minimum with Hessian H
        shifted by a slope g, the localized posterior has covariance S = (nβH + γ)⁻¹ and
        mean w* − nβ S g, so E[F] = −nβ² gᵀSg = −Var(F), and the slope lowers λ̂ by between
        ½ Var(F) (stiff directions) and Var(F) (directions only γ holds). The variance is
        used rather than the mean because it is estimated far more precisely: chains that
        wander along a curved valley of a singular model make the mean of F slow to settle.
        A slope that moves λ̂ by 10 % is as large as the step-size errors llc aims to stay
        within. A bound like nβ‖∇L_n(w*)‖·‖w − w*‖ would overstate the term in high
        dimension, where the gradient hardly points along the draws.
    chain_disagreement_p
        0.001: ``chain-means-disagree`` fires when the healthy chains' means are further
        apart than their own autocorrelation MCSEs allow, at this p-value of the χ² test
        Σ_c (x̄_c − x̄)² / MCSE_c² ~ χ²(chains − 1). Such chains move on a time scale the
        autocorrelation estimate cannot see, and only the spread of the chain means measures
        the error (which :attr:`~llc.LLCResult.llc_mcse` then reports). The test runs on
        every call, so the false-alarm rate is kept at 0.1 %.
    chain_disagreement_ratio
        2.0: ``chain-means-disagree`` also needs the chain means to spread more than this
        many times what their MCSEs allow (√(χ² / (chains − 1))). Singular models mix
        slowly along their flat directions, so the autocorrelation MCSE of a single chain is
        often a little low, and with many chains the χ² test alone detects small shortfalls
        that the reported MCSE (the larger of the two estimates) already covers; a factor of
        2 is an error bar off by as much as the check is meant to catch.
    max_step_bias
        0.1: ``step-too-large`` fires when the step's estimated bias of λ̂ over the draws,
        b̂ = (ε/8) nβ² · mean ‖∇L_B(w_t)‖² (SGLD, from the recorded gradient norms), exceeds
        this fraction of λ̂. For SGLD on a quadratic posterior with gradient noise independent
        of w, E_ε[U − U*] = d/2 + (ε/8) E_ε‖∇U_B‖² exactly (docs/step_size_auto.md), so b̂
        is the bias of the regular part of the model; on singular models it undercounts (the
        bias also moves the chains to stiffer regions), so a b̂ of 10 % is already a large step.
        ``step_size="auto"`` aims at 3 % during the burn-in. Under a strong localization
        b̂ still follows the bias λ̂ shows against smaller steps (docs/calibration.md, a
        digits classifier at γ = 100). Acceptance cannot see this bias (docs/calibration.md:
        λ̂ five times λ at an acceptance above 0.97).
    max_loss_repeat_difference
        1e-5: ``stochastic-loss`` fires when two evaluations of ``loss_fn`` on the same
        batch at w* differ by more than this relative amount. A deterministic loss repeats
        exactly on a CPU; non-deterministic GPU reductions differ by about float32's
        rounding (1e-7); dropout and random augmentations by percents.
    """

    significance_z: float = 2.0
    max_llc_margin: float = 0.05
    max_rhat: float = 1.01
    min_ess_per_chain: float = 100.0
    drift_first: float = 0.1
    drift_last: float = 0.5
    drift_z: float = 3.5
    drift_min_draws: int = 100
    min_mala_acceptance: float = 0.9
    target_mala_acceptance: float = 0.95
    step_too_small_acceptance: float = 0.999
    room_acceptance: float = 0.99
    diffusion_ratio: float = 0.5
    max_first_order: float = 0.1
    chain_disagreement_p: float = 0.001
    chain_disagreement_ratio: float = 2.0
    max_loss_repeat_difference: float = 1e-5
    max_step_bias: float = 0.1

    def __post_init__(self) -> None:
        for name in ("significance_z", "max_llc_margin", "max_rhat", "min_ess_per_chain",
                     "drift_z", "max_first_order", "diffusion_ratio", "max_step_bias",
                     "max_loss_repeat_difference", "chain_disagreement_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}")
        for name in ("drift_first", "drift_last", "min_mala_acceptance", "chain_disagreement_p",
                     "target_mala_acceptance", "step_too_small_acceptance", "room_acceptance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise ValueError(f"`{name}` must be in (0, 1]; got {value!r}")
        if self.drift_first + self.drift_last > 1:
            raise ValueError("`drift_first` + `drift_last` must be at most 1 (the two parts "
                             "of the trace the drift test compares may not overlap)")
        if isinstance(self.drift_min_draws, bool) or not isinstance(self.drift_min_draws, int) \
                or self.drift_min_draws < 4:
            raise ValueError(f"`drift_min_draws` must be an integer >= 4; "
                             f"got {self.drift_min_draws!r}")


# ---- what the checks share -------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float from an attribute value, or None (missing, text, NaN)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}"


def _chain_list(chains: Any) -> str:
    chains = [int(c) for c in chains]
    return ("chain " if len(chains) == 1 else "chains ") + ", ".join(map(str, chains))


def _array_mcse(trace: np.ndarray) -> float:
    """MCSE of the mean of a (chain, draw) array (arviz-stats)."""
    from arviz_stats.base import array_stats

    return float(array_stats.mcse(np.asarray(trace, dtype=np.float64)))


class _Run:
    """A result with its expensive statistics computed once."""

    def __init__(self, result: LLCResult) -> None:
        self.result = result
        self.attrs = result.attrs
        self.healthy = np.asarray(result.healthy_chains, dtype=int)
        self.trace = np.asarray(result.llc_trace, dtype=np.float64)[self.healthy]

    @property
    def num_healthy(self) -> int:
        return int(self.healthy.size)

    @property
    def num_draws(self) -> int:
        return int(self.trace.shape[1])

    @cached_property
    def usable(self) -> bool:
        """Healthy chains with finite draws exist: the statistical checks can run."""
        return self.num_healthy > 0 and self.num_draws > 0 and bool(np.isfinite(self.trace).all())

    @cached_property
    def llc_mean(self) -> float:
        return float(self.result.llc_mean)

    @cached_property
    def llc_mcse(self) -> float:
        return float(self.result.llc_mcse)

    @cached_property
    def ess_bulk(self) -> float:
        return float(self.result.ess_bulk)

    @cached_property
    def ess_tail(self) -> float:
        return float(self.result.ess_tail)

    @cached_property
    def rhat(self) -> float:
        return float(self.result.rhat)

    @cached_property
    def chain_means(self) -> np.ndarray:
        return self.trace.mean(axis=1)

    @cached_property
    def chain_mcse(self) -> np.ndarray:
        return np.array([_array_mcse(chain[None, :]) for chain in self.trace])

    @cached_property
    def step_size(self) -> float | None:
        """The one ε of the run, or None (unknown, or per-leaf steps: no one ε to judge)."""
        if self.attrs.get("step_size_per_leaf", "off") not in ("off", "missing"):
            return None
        step = _number(self.attrs.get("sampler_step_size"))
        if step is None and "step_size" in self.result.sample_stats:
            values = np.asarray(self.result.sample_stats["step_size"], dtype=np.float64)
            values = values[np.isfinite(values)]
            step = float(values[0]) if values.size else None
        return step if step is not None and step > 0 else None

    @cached_property
    def acceptance(self) -> tuple[float, np.ndarray, int] | None:
        """(pooled mean, per-healthy-chain means, number of diagnosed draws) or None (none
        diagnosed, or the loss's rounding swamps the acceptance: :mod:`llc._precision`)."""
        values = self.result.sample_stats.get("mala_acceptance")
        if values is None or self.num_healthy == 0 \
                or swamps_acceptance(_number(self.attrs.get("loss_rounding")) or 0.0):
            return None
        values = np.asarray(values, dtype=np.float64)[self.healthy]
        count = int(np.isfinite(values).sum())
        if count == 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a chain without diagnosed draws
            per_chain = np.nanmean(values, axis=1)
        return float(np.nanmean(values)), per_chain, count

    @cached_property
    def diffusion_ratio(self) -> float | None:
        """Σ ‖w_t − w*‖² / Σ t ε d over the healthy chains and the last half of the draws.

        A draw's position has taken t = num_burnin + draw·thin SGLD steps from w*; free
        Brownian motion with the sampler's noise would be at t ε d on average (for SGHMC and
        SGNHT ε is their free diffusion per step, 2η/α and 2h/A: the noise-equivalent step of
        :func:`llc.samplers.langevin_noise_equivalent_step`). Pooling the chains and half of
        the draws keeps the ratio from resting on one noisy χ²_d value.
        """
        distance = self.result.sample_stats.get("distance")
        dim = _number(self.attrs.get("num_params"))
        burnin = _number(self.attrs.get("num_burnin"))
        thin = _number(self.attrs.get("thin", 1))
        if distance is None or self.step_size is None or not dim or burnin is None or not thin:
            return None
        distance = np.asarray(distance, dtype=np.float64)[self.healthy]
        draws = np.arange(self.num_draws // 2, self.num_draws)
        steps = burnin + draws * thin
        draws, steps = draws[steps > 0], steps[steps > 0]
        if not draws.size or not distance.size:
            return None
        moved = distance[:, draws] ** 2
        if not np.isfinite(moved).all():
            return None
        free_step = self.step_size
        if self.settings is not None:
            free_step = langevin_noise_equivalent_step(self.settings) or free_step
        return float(moved.sum() / (distance.shape[0] * steps.sum() * free_step * dim))

    @cached_property
    def settings(self) -> Any | None:
        """The sampler settings the attrs record (None for per-leaf steps or unknown ones)."""
        return None if self.step_size is None else settings_from_attrs(self.attrs)

    def scaled_step(self, factor: float) -> float:
        """The sampler's step that multiplies its curvature-equivalent SGLD step ε_c by
        ``factor`` (SGNHT's h scales as √ε_c); the step itself where settings are unknown."""
        assert self.step_size is not None
        exponent = 1.0 if self.settings is None else step_exponent(self.settings)
        return self.step_size * factor ** exponent

    @cached_property
    def bias_terms(self) -> tuple[float, float, float, float] | None:
        """(ε_c, ε_n, Ḡ, N) of :attr:`step_bias`: the sampler's curvature- and
        noise-equivalent SGLD steps, nβ²·mean ‖∇L_B‖² over the draws and N = nβ² tr Σ_B at the
        chains' last positions (``attrs["gradient_noise_power_at_draws"]``; at w* for a result
        without it; 0 where neither was measured: the noise then counts whole inside Ḡ). None
        where b̂ does not apply (MALA, RMSProp-SGLD, per-leaf steps, λ̂ ≤ 0, no gradient
        norms)."""
        if self.settings is None or not self.usable or self.llc_mean <= 0:
            return None
        epsilon = langevin_equivalent_step(self.settings)
        nbeta = _number(self.attrs.get("nbeta"))
        norms = self.result.sample_stats.get("grad_norm")
        if not epsilon or not nbeta or norms is None:
            return None
        norms = np.asarray(norms, dtype=np.float64)[self.healthy]
        if not np.isfinite(norms).all():
            return None
        power = nbeta**2 * float(np.mean(norms**2))
        noise = _number(self.attrs.get("gradient_noise_power_at_draws"))
        if noise is None:  # a result from before it was measured: at w*
            noise = _number(self.attrs.get("gradient_noise_power"))
        noise_step = langevin_noise_equivalent_step(self.settings)
        if noise is None or not noise_step:
            return epsilon, epsilon, power, 0.0
        return epsilon, noise_step, power, noise

    @cached_property
    def step_bias(self) -> tuple[float, float] | None:
        """The estimated step bias of λ̂ over the draws, (b̂, b̂ / λ̂): (ε_c/8)·(Ḡ − N) +
        (ε_n/8)·s·N, the minibatch noise N counted at the sampler's noise-equivalent step
        (larger than ε_c for SGHMC and SGNHT) and only the loss's share s of its heat
        (:func:`llc._bias.estimated_step_bias`; the terms are :attr:`bias_terms`)."""
        if self.bias_terms is None:
            return None
        bias = estimated_step_bias(*self.bias_terms, self.llc_mean, self.localization)
        return bias, bias / self.llc_mean

    @property
    def localization(self) -> float:
        return _number(self.attrs.get("localization")) or 0.0

    def setting(self, key: str, default: str = "?") -> str:
        value = self.attrs.get(key)
        return default if value is None else str(value)


Check = Callable[[_Run, HealthThresholds], "Finding | None"]


# ---- the checks ------------------------------------------------------------------------------


def _check_negative_llc(run: _Run, t: HealthThresholds) -> Finding | None:
    """λ̂, or a healthy chain's mean, below 0 by more than ``significance_z`` MCSE."""
    if not run.usable:
        return None
    mean, mcse = run.llc_mean, run.llc_mcse
    pooled = math.isfinite(mcse) and mean + t.significance_z * mcse < 0
    negative = [i for i, (m, s) in enumerate(zip(run.chain_means, run.chain_mcse))
                if math.isfinite(s) and m + t.significance_z * s < 0]  # healthy-chain positions
    if not pooled and not negative:
        return None
    parts = []
    if pooled:
        parts.append(f"λ̂ = {_fmt(mean)} ± {_fmt(mcse, 2)} (MCSE) is below 0 by "
                     f"{_fmt(-mean / mcse if mcse > 0 else math.inf, 2)} MCSE")
    chains = tuple(int(run.healthy[i]) for i in negative)
    if negative:
        means = ", ".join(_fmt(run.chain_means[i]) for i in negative)
        parts.append(f"{_chain_list(chains)} {'has a' if len(negative) == 1 else 'have'} "
                     f"significantly negative mean{'s' if len(negative) > 1 else ''} ({means})")
    message = ("; ".join(parts) + ". The sampled loss is below L_n(w*) on average: w* is not a "
               "local minimum of L_n, or the chains escaped to a region of lower loss.")
    step = run.step_size
    gamma = _number(run.attrs.get("localization"))
    grad = _number(run.attrs.get("init_grad_norm"))
    suggestion = ("check that `params` is a trained minimum"
                  + (f" (‖∇L_n(w*)‖ = {_fmt(grad)})" if grad is not None else "")
                  + "; raise `localization`"
                  + (f" from {_fmt(gamma)} to ~{_fmt(max(10 * gamma, 1.0))}" if gamma is not None
                     else "")
                  + " to keep the chains near w*; lower `step_size`"
                  + (f" from {_fmt(step)} to ~{_fmt(run.scaled_step(1 / 3), 2)}" if step
                     else "") + ".")
    return Finding("negative-llc", message, chains, suggestion)


def _check_llc_above_max(run: _Run, t: HealthThresholds) -> Finding | None:
    """λ̂ above (1 + ``max_llc_margin``)·d/2 by more than ``significance_z`` MCSE."""
    dim = _number(run.attrs.get("num_params"))
    if not run.usable or not dim:
        return None
    mean, mcse = run.llc_mean, run.llc_mcse
    bound = dim / 2
    threshold = (1 + t.max_llc_margin) * bound
    if not (math.isfinite(mcse) and mean - t.significance_z * mcse > threshold):
        return None
    message = (f"λ̂ = {_fmt(mean)} ± {_fmt(mcse, 2)} (MCSE) exceeds d/2 = {_fmt(bound)} "
               f"(d = {int(dim)} parameters), the largest learning coefficient a minimum can "
               f"have ({_fmt(mean / bound, 2)}× d/2): the sampler "
               "overestimates the loss increase, usually because the step is too large "
               "(discretization and minibatch-gradient noise add energy).")
    step = run.step_size
    suggestion = "lower `step_size`" + (
        f" from {_fmt(step)} to ~{_fmt(run.scaled_step(0.1), 2)}" if step else "")
    num_data = _number(run.attrs.get("num_data"))
    if num_data and num_data >= 2 and run.result.nbeta < 0.5 * num_data / math.log(num_data):
        suggestion += (f"; `nbeta` = {_fmt(run.result.nbeta)} is far below n/log n = "
                       f"{_fmt(num_data / math.log(num_data))}: at high temperature the "
                       "posterior leaves the region around w* that λ describes, so raise it")
    return Finding("llc-above-max", message, (), suggestion + ".")


def _check_non_finite(run: _Run, t: HealthThresholds) -> Finding | None:
    """Chains that diverged or raised (left out of λ̂)."""
    result = run.result
    bad = np.asarray(result.failed_chains, dtype=bool).copy()
    diverging = result.sample_stats.get("diverging")
    if diverging is not None:
        bad |= np.asarray(diverging, dtype=bool).reshape(bad.size, -1).any(axis=1)
    bad |= ~np.isfinite(np.asarray(result.llc_trace, dtype=np.float64)).all(axis=1)
    chains = tuple(int(c) for c in np.flatnonzero(bad))
    if not chains:
        return None
    errors = list(result.chain_errors) + [""] * (len(bad) - len(result.chain_errors))
    details = "; ".join(f"chain {c} {errors[c] or 'has non-finite draws'}" for c in chains)
    message = (f"{len(chains)} of {len(bad)} chains failed and are left out of λ̂: {details}.")
    raised = [c for c in chains if errors[c].startswith("raised")]
    diverged = [c for c in chains if c not in raised]
    parts = []
    if diverged:
        step = run.step_size
        parts.append("lower `step_size`"
                     + (f" from {_fmt(step)} to ~{_fmt(run.scaled_step(0.1), 2)}" if step
                        else "")
                     + " (a diverging chain stepped beyond the stability limit, roughly "
                       "step_size < 4 / (nβ · largest Hessian eigenvalue)) or raise "
                       "`localization`")
    if raised:
        parts.append(f"fix `loss_fn` so it does not raise near w* ({_chain_list(raised)}: "
                     f"{errors[raised[0]]})")
    return Finding("non-finite", message, chains, "; ".join(parts) + ".")


def _check_high_rhat(run: _Run, t: HealthThresholds) -> Finding | None:
    """R-hat above ``max_rhat`` with at least two healthy chains."""
    if not run.usable or run.num_healthy < 2 or run.num_draws < 4:
        return None
    rhat = run.rhat
    if not (math.isfinite(rhat) and rhat > t.max_rhat):
        return None
    means = ", ".join(_fmt(m) for m in run.chain_means)
    message = (f"R-hat = {rhat:.3f} > {t.max_rhat} over {run.num_healthy} healthy chains "
               f"(chain means {means}): the chains have not converged to one distribution.")
    draws = _number(run.attrs.get("num_draws")) or run.num_draws
    burnin = _number(run.attrs.get("num_burnin"))
    suggestion = (f"run longer: raise `num_draws` from {int(draws)} to ~{int(2 * draws)}"
                  + (f" and `num_burnin` from {int(burnin)} to ~{int(max(2 * burnin, 100))}"
                     if burnin is not None else " and `num_burnin`")
                  + "; if the chain means stay apart, the chains sit in different basins: "
                    "raise `localization`.")
    return Finding("high-rhat", message, (), suggestion)


def _check_low_ess(run: _Run, t: HealthThresholds) -> Finding | None:
    """Bulk or tail ESS below ``min_ess_per_chain`` per healthy chain."""
    if not run.usable or run.num_draws < 4:
        return None
    needed = t.min_ess_per_chain * run.num_healthy
    bulk, tail = run.ess_bulk, run.ess_tail
    finite = [value for value in (bulk, tail) if math.isfinite(value)]
    if not finite or min(finite) >= needed:
        return None
    lowest = min(finite)
    message = (f"bulk ESS = {bulk:.0f} and tail ESS = {tail:.0f} from {run.num_healthy} "
               f"healthy chain{'s' if run.num_healthy > 1 else ''} × {run.num_draws} draws, "
               f"below {t.min_ess_per_chain:.0f} per chain ({needed:.0f}): λ̂'s MCSE and "
               "R-hat are unreliable.")
    draws = _number(run.attrs.get("num_draws")) or run.num_draws
    target = int(math.ceil(draws * 1.2 * needed / max(lowest, 1.0) / 100.0) * 100)
    suggestion = (f"raise `num_draws` from {int(draws)} to ~{target} (ESS grows in proportion "
                  "to the draws)")
    acceptance = run.acceptance
    if acceptance is not None and acceptance[0] >= t.room_acceptance and run.step_size \
            and not _no_room_for_a_larger_step(run):
        suggestion += (f", or raise `step_size` (now {_fmt(run.step_size)}; MALA acceptance "
                       f"{acceptance[0]:.4f} leaves room) so each draw moves further")
    return Finding("low-ess", message, (), suggestion + ".")


def _check_drift(run: _Run, t: HealthThresholds) -> Finding | None:
    """Geweke's test on the pooled healthy chains: first part vs last part of the draws."""
    if not run.usable or run.num_draws < t.drift_min_draws:
        return None
    draws = run.num_draws
    first = run.trace[:, : max(4, math.ceil(t.drift_first * draws))]
    last = run.trace[:, draws - max(4, int(t.drift_last * draws)):]
    se = math.hypot(_array_mcse(first), _array_mcse(last))
    if not (math.isfinite(se) and se > 0):
        return None
    z = (first.mean() - last.mean()) / se
    if abs(z) <= t.drift_z:
        return None
    message = (f"the llc trace still trends after burn-in: the mean of the first "
               f"{100 * t.drift_first:.0f} % of the draws ({_fmt(first.mean())}) differs from "
               f"the last {100 * t.drift_last:.0f} % ({_fmt(last.mean())}) by {abs(z):.1f} "
               "standard errors (Geweke z), so λ̂ mixes the approach to equilibrium into the "
               "estimate.")
    burnin = _number(run.attrs.get("num_burnin"))
    thin = _number(run.attrs.get("thin")) or 1.0
    if burnin is not None:
        new = int(max(2 * burnin, burnin + draws * thin / 2, 100))
        suggestion = f"raise `num_burnin` from {int(burnin)} to at least ~{new}"
    else:
        suggestion = "raise `num_burnin`"
    acceptance = run.acceptance
    if acceptance is not None and acceptance[0] >= t.step_too_small_acceptance \
            and not _no_room_for_a_larger_step(run):
        suggestion += " or raise `step_size` (MALA acceptance near 1: the chain relaxes slowly)"
    return Finding("drift-after-burnin", message, (), suggestion + ".")


def _check_low_mala_acceptance(run: _Run, t: HealthThresholds) -> Finding | None:
    """Mean MALA acceptance (pooled or per healthy chain) below ``min_mala_acceptance``."""
    acceptance = run.acceptance
    if acceptance is None or _stochastic_difference(run, t) is not None:
        return None  # a random loss lowers the acceptance at any step: stochastic-loss says so
    pooled, per_chain, count = acceptance
    low = [i for i, a in enumerate(per_chain) if math.isfinite(a) and a < t.min_mala_acceptance]
    if pooled >= t.min_mala_acceptance and not low:
        return None
    chains = tuple(int(run.healthy[i]) for i in low)
    message = (f"mean MALA acceptance {pooled:.3f} over {count} diagnosed steps of "
               f"{run.num_healthy} healthy chain{'s' if run.num_healthy > 1 else ''}"
               + (f" ({_chain_list(chains)} below {t.min_mala_acceptance}: "
                  + ", ".join(f"{per_chain[i]:.3f}" for i in low) + ")" if low else "")
               + f"; below {t.min_mala_acceptance} the SGLD step is too large for the "
                 "posterior's curvature, and λ̂ is biased upward.")
    step = run.step_size
    if step:
        worst = min(pooled, *[a for a in per_chain if math.isfinite(a)])
        factor = (1 - t.target_mala_acceptance) / max(1 - worst, 1e-12)
        smaller = _fmt(run.scaled_step(min(factor, 0.5)), 2)
        suggestion = (f"lower `step_size` from {_fmt(step)} to ~{smaller} "
                      f"(1 − acceptance grows about in proportion to the step size; aim for "
                      f"≥ {t.target_mala_acceptance}).")
    else:
        suggestion = f"lower the step size until MALA acceptance is ≥ {t.target_mala_acceptance}."
    return Finding("low-mala-acceptance", message, chains, suggestion)


def _no_room_for_a_larger_step(run: _Run) -> bool:
    """The step's estimated bias is within 1.5× of what ``step_size="auto"`` allows (or past
    it): a high acceptance then does not mean the step may grow. The acceptance cannot see the
    minibatch noise, and SGHMC's and SGNHT's probe at ε_c accepts nearly always at their
    accurate step, where the amplified noise, not the curvature, limits it; slow mixing is
    then for ``low-ess`` and ``drift-after-burnin`` to report, not a step to raise."""
    return run.step_bias is not None and run.step_bias[1] > _BIAS_TARGET / 1.5


def _check_step_too_small(run: _Run, t: HealthThresholds) -> Finding | None:
    """Acceptance ≥ ``step_too_small_acceptance`` and slow mixing or free diffusion."""
    acceptance = run.acceptance
    if acceptance is None or not run.usable:
        return None
    pooled = acceptance[0]
    if pooled < t.step_too_small_acceptance:
        return None
    if _no_room_for_a_larger_step(run):
        return None
    reasons = []
    if run.num_draws >= 4:
        per_chain = run.ess_bulk / run.num_healthy
        if math.isfinite(per_chain) and per_chain < t.min_ess_per_chain:
            reasons.append(f"bulk ESS is {per_chain:.0f} per chain (< {t.min_ess_per_chain:.0f})")
    ratio = run.diffusion_ratio
    if ratio is not None and ratio >= t.diffusion_ratio:
        reasons.append(f"the chains still diffuse like a free random walk: over the last half "
                       f"of the draws ‖w − w*‖² is {ratio:.2f} × t·ε·d after t steps "
                       f"(≥ {t.diffusion_ratio}), so the run is shorter than about one "
                       "relaxation time")
    if not reasons:
        return None
    message = (f"MALA acceptance {pooled:.5f} ≥ {t.step_too_small_acceptance}: the step is "
               f"far below its stability limit, and " + "; ".join(reasons) + ".")
    step = run.step_size
    # b̂ grows in proportion to ε_c: the step may grow until b̂ reaches the auto rule's budget
    ratio = None if run.step_bias is None else run.step_bias[1]
    room = math.inf if ratio is None else _BIAS_TARGET / max(ratio, 1e-12)
    if step:
        factor = ((1 - t.room_acceptance) / max(1 - pooled, 1e-12)) ** (2 / 3)
        factor = min(max(factor, 2.0), 10.0, room)  # a clear change, at most one decade
        suggestion = (f"raise `step_size` from {_fmt(step)} to "
                      f"~{_fmt(run.scaled_step(factor), 2)} (1 − acceptance grows like "
                      f"step_size^1 to ^1.5; this aims for about {t.room_acceptance}, within an "
                      f"estimated step bias of {100 * _BIAS_TARGET:.0f} % of λ̂) and check that "
                      f"MALA acceptance stays ≥ {t.target_mala_acceptance}.")
    else:
        suggestion = f"raise the step size until MALA acceptance is about {t.room_acceptance}."
    return Finding("step-too-small", message, (), suggestion)


def _check_step_too_large(run: _Run, t: HealthThresholds) -> Finding | None:
    """The estimated step bias b̂ over the draws (SGLD, SGHMC, SGNHT) above
    ``max_step_bias`` · λ̂."""
    if run.step_bias is None:
        return None
    bias, ratio = run.step_bias
    step = run.step_size
    assert step is not None  # step_bias is None without a step size
    if ratio <= t.max_step_bias:
        return None
    assert run.bias_terms is not None  # step_bias is None without them
    epsilon, noise_step, power, noise = run.bias_terms
    if noise > 0:
        share = noise_share(power, noise, run.llc_mean, run.localization)
        if noise_step == epsilon == step:
            steps = f"(ε/8)·(Ḡ − N + s·N) with ε = {_fmt(epsilon, 2)}"
        else:
            steps = (f"(ε_c/8)·(Ḡ − N) + (ε_n/8)·s·N with ε_c = {_fmt(epsilon, 2)} and ε_n = "
                     f"{_fmt(noise_step, 2)} the SGLD steps of the same curvature and noise bias")
        formula = (f"{steps}, Ḡ = nβ²·mean ‖∇L_B‖² = "
                   f"{_fmt(power, 3)} over the draws, N = nβ² tr Σ_B = {_fmt(noise, 3)} where "
                   f"the chains are, s = {_fmt(share, 2)} the loss's share of the noise's heat")
    else:
        scale = ("(ε/8)" if epsilon == step else f"(ε_c/8) with ε_c = {_fmt(epsilon, 2)}, "
                 "the SGLD step of the same curvature bias,")
        formula = f"{scale} · nβ² · mean ‖∇L_B‖² over the draws"
    message = (f"the step's estimated bias of λ̂ is {_fmt(bias)} = {100 * ratio:.0f} % of "
               f"λ̂ = {_fmt(run.llc_mean)} (b̂ = {formula}; above "
               f"{100 * t.max_step_bias:.0f} %): λ̂ is biased upward, by at least "
               "that much on a singular model, whatever the MALA acceptance says.")
    target = min(_BIAS_TARGET, t.max_step_bias)
    suggestion = (f"lower `step_size` from {_fmt(step)} to "
                  f"~{_fmt(run.scaled_step(target / ratio), 2)} (b̂ is about proportional to "
                  f"the step; this aims at {100 * target:.0f} %, as `step_size=\"auto\"` "
                  "does), and give the chains the longer burn-in a smaller step needs")
    return Finding("step-too-large", message, (), suggestion + ".")


def _check_not_critical_point(run: _Run, t: HealthThresholds) -> Finding | None:
    """The variance of the first-order term F = nβ ∇L_n(w*)·(w_t − w*) over the draws above
    ``max_first_order`` × max(1, |λ̂|)."""
    values = run.result.sample_stats.get("first_order")
    if values is None or not run.usable:
        return None
    values = np.asarray(values, dtype=np.float64)[run.healthy]
    if values.size < 2 or not np.isfinite(values).all():
        return None
    spread = float(values.var(ddof=1))
    scale = max(1.0, abs(run.llc_mean))
    if spread <= t.max_first_order * scale:
        return None
    grad = _number(run.attrs.get("init_grad_norm"))
    batches = run.attrs.get("init_loss_batches")
    partial = batches not in (None, "all")
    nbeta = float(run.result.nbeta)
    message = (f"the first-order term F = nβ ∇L_n(w*)·(w − w*) varies over the draws with "
               f"variance {_fmt(spread)} (mean {_fmt(float(values.mean()))}), "
               f"{_fmt(100 * spread / scale, 2)} % of max(1, |λ̂|) = {_fmt(scale)} (nβ = "
               f"{_fmt(nbeta)}" + (f", ‖∇L_n(w*)‖ = {_fmt(grad)}" if grad is not None else "")
               + (f" on {batches} batches, so partly minibatch noise" if partial else "")
               + "): w* is not a critical point of L_n. Around a quadratic minimum shifted by a "
                 "slope the chains roll downhill and the slope lowers λ̂ by between ½ and 1 times "
                 "that variance, so λ̂ measures the slope as well as the geometry around w*.")
    gamma = _number(run.attrs.get("localization"))
    suggestion = ("use a checkpoint closer to convergence (train longer, or finish with "
                  "full-batch steps)")
    if gamma is not None:
        suggestion += (f", or raise `localization` from {_fmt(gamma)} to "
                       f"~{_fmt(max(10 * gamma, 1.0))} so the chains move less far along the slope")
    if partial:
        suggestion += ("; compute L_n(w*) and its gradient on all the data "
                       "(`init_loss_batches=None`)")
    return Finding("not-critical-point", message, (), suggestion + ".")


def _check_chain_means_disagree(run: _Run, t: HealthThresholds) -> Finding | None:
    """The chains' means further apart than their own MCSEs allow (χ² test)."""
    if not run.usable or run.num_healthy < 2 or run.num_draws < t.drift_min_draws:
        return None
    errors = run.chain_mcse
    if not (np.isfinite(errors).all() and (errors > 0).all()):
        return None
    from scipy import stats

    weights = 1.0 / errors ** 2
    means = run.chain_means
    centre = float((weights * means).sum() / weights.sum())
    statistic = float((weights * (means - centre) ** 2).sum())
    dof = run.num_healthy - 1
    p_value = float(stats.chi2.sf(statistic, dof))
    ratio = math.sqrt(statistic / dof)
    if p_value >= t.chain_disagreement_p or ratio <= t.chain_disagreement_ratio:
        return None
    result = run.result
    message = (f"the chain means ({', '.join(_fmt(m) for m in means)}) spread {_fmt(ratio, 2)}× "
               f"more than their autocorrelation MCSEs allow (χ² = {_fmt(statistic)} on {dof} "
               f"degrees of freedom, p = {p_value:.1g}): the chains move on a time scale the "
               "autocorrelation estimate cannot see, so its MCSE "
               f"({_fmt(result.llc_mcse_autocorr, 2)}) understates the error; the reported MCSE "
               f"is the between-chain standard error {_fmt(result.llc_chain_se, 2)}, itself "
               f"uncertain with {run.num_healthy} chains.")
    draws = _number(run.attrs.get("num_draws")) or run.num_draws
    gamma = _number(run.attrs.get("localization"))
    suggestion = (f"run more chains (the error of the between-chain estimate shrinks with "
                  f"their number) and longer: raise `num_draws` from {int(draws)} to "
                  f"~{int(4 * draws)}")
    if gamma is not None:
        suggestion += (f"; if the chains settle in different places, raise `localization` "
                       f"from {_fmt(gamma)} to ~{_fmt(max(10 * gamma, 1.0))}")
    return Finding("chain-means-disagree", message, (), suggestion + ".")


def _stochastic_difference(run: _Run, t: HealthThresholds) -> float | None:
    difference = _number(run.attrs.get("loss_repeat_difference"))
    return difference if difference is not None and difference > t.max_loss_repeat_difference \
        else None


def _check_stochastic_loss(run: _Run, t: HealthThresholds) -> Finding | None:
    """Two evaluations of ``loss_fn`` on one batch at w* differed."""
    difference = _stochastic_difference(run, t)
    if difference is None:
        return None
    message = (f"`loss_fn` gave two values {_fmt(100 * difference, 2)} % apart on the same batch "
               "at w*: it is random (dropout or batch norm in training mode, a random "
               "augmentation, sampling inside the model). The chains then follow a noisy "
               "potential, its noise adds to the loss they measure, and λ̂ is inflated; the "
               "MALA acceptance and the step-size advice do not apply.")
    suggestion = ("make `loss_fn` deterministic: call `model.eval()` (or pass `train=False`, "
                  "`deterministic=True`) inside it, and move random augmentations out of it")
    return Finding("stochastic-loss", message, (), suggestion + ".")


def _check_num_data_mismatch(run: _Run, t: HealthThresholds) -> Finding | None:
    """The batches of L_n(w*) held a number of rows other than ``num_data``."""
    rows, num_data = _number(run.attrs.get("init_loss_rows")), _number(run.attrs.get("num_data"))
    batches = _number(run.attrs.get("batches_per_pass"))
    if rows is None or num_data is None or batches is None or batches < 2:
        return None  # array data, a partial pass, or one batch (which may hold statistics)
    if int(rows) == int(num_data):
        return None
    message = (f"one pass over `data` yielded {int(rows)} rows, but `num_data` = {int(num_data)}: "
               f"L_n(w*) is the mean over the {int(rows)} rows the iterable yielded"
               + (" (a DataLoader with `drop_last=True` leaves out the last partial batch; "
                  "with shuffling a different subset each pass)" if rows < num_data else "")
               + ", while nβ = n / log n uses `num_data`.")
    suggestion = ("pass an iterable that yields every row once per pass (`drop_last=False`), "
                  "or set `num_data` to the number of rows it yields")
    return Finding("num-data-mismatch", message, (), suggestion + ".")


def _check_fixed_order_batches(run: _Run, t: HealthThresholds) -> Finding | None:
    """An iterable that repeats its batches in one order, under the independent trace."""
    if run.attrs.get("iterable_reshuffles") not in (0, "0", False):
        return None
    message = ("`data` yields the same batches in the same order on every pass, so the "
               "separate pass on which the trace's losses are taken is in step with the "
               "chains' own: a trace batch can be one the chain fitted a few steps before, and "
               "λ̂ can be biased.")
    suggestion = ("shuffle on every pass (`DataLoader(..., shuffle=True)`), or pass the data "
                  "as a tuple of arrays, which llc draws itself")
    return Finding("fixed-order-batches", message, (), suggestion + ".")


#: The checks :func:`check_health` runs, in order: ``(code, function)``.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("non-finite", _check_non_finite),
    ("stochastic-loss", _check_stochastic_loss),
    ("num-data-mismatch", _check_num_data_mismatch),
    ("fixed-order-batches", _check_fixed_order_batches),
    ("not-critical-point", _check_not_critical_point),
    ("negative-llc", _check_negative_llc),
    ("llc-above-max", _check_llc_above_max),
    ("low-mala-acceptance", _check_low_mala_acceptance),
    ("step-too-small", _check_step_too_small),
    ("step-too-large", _check_step_too_large),
    ("drift-after-burnin", _check_drift),
    ("high-rhat", _check_high_rhat),
    ("chain-means-disagree", _check_chain_means_disagree),
    ("low-ess", _check_low_ess),
)


def check_health(result: LLCResult, thresholds: HealthThresholds | None = None) -> list[Finding]:
    """Run every health check on ``result``; one :class:`Finding` per problem found.

    Parameters
    ----------
    result
        What :func:`llc.estimate` returned (or :func:`llc.load` read back).
    thresholds
        Overrides of the default :class:`HealthThresholds`.

    Returns
    -------
    list of Finding
        Empty for a healthy run. Checks whose inputs are missing (no MALA diagnostics, a
        result without ``num_params``...) are skipped silently.
    """
    thresholds = HealthThresholds() if thresholds is None else thresholds
    if not isinstance(thresholds, HealthThresholds):
        raise TypeError(f"`thresholds` must be a HealthThresholds; got {type(thresholds).__name__}")
    run = _Run(result)
    findings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # arviz on short or constant traces
        for _, check in CHECKS:
            finding = check(run, thresholds)
            if finding is not None:
                findings.append(finding)
    return findings


def warn_findings(findings: list[Finding], stacklevel: int = 2) -> None:
    """Emit one warning per finding: ``"[code] message Suggestion: ..."``.

    The category is :class:`ChainFailureWarning` for ``non-finite`` (chains left out of λ̂)
    and :class:`LLCHealthWarning` otherwise. ``stacklevel`` is passed to
    :func:`warnings.warn` (2: the caller of this function).
    """
    for finding in findings:
        category = ChainFailureWarning if finding.code == "non-finite" else LLCHealthWarning
        warnings.warn(str(finding), category, stacklevel=stacklevel)
