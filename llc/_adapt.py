r"""``step_size="auto"``: the burn-in sets ε from a measured estimate of the bias it adds to λ̂.

**The rule.** The burn-in is cut into windows of ``window`` steps. In each window every
chain steps with the current ε, and every step records
:math:`\lVert\nabla L_B(w)\rVert^2` (already computed by the step) and the MALA acceptance
probability of its move on its minibatch (docs/design.md §2: one more gradient per step). After the
window, with :math:`\overline{G}` the window's mean of
:math:`n\beta^2\lVert\nabla L_B(w)\rVert^2` over its steps and the chains, the **estimated
step bias** of λ̂ at a step ε is

.. math::

    \hat b(\epsilon) = \frac{\epsilon}{8}\,\Big(\overline{G}
        + n\beta^2 \operatorname{tr}\Sigma_B\Big),

with :math:`\operatorname{tr}\Sigma_B` the summed variance of the minibatch gradient at w*,
measured on 16 minibatches before the burn-in; the second term counts only with
``trace_batch="own"`` (see below), and with the default independent batches
:math:`\hat b(\epsilon) = \tfrac{\epsilon}{8}\overline{G}`. With :math:`\hat\lambda` the
burn-in's estimate over the most recent half of the windows (n β times the mean of
:math:`L_B(w_t) - L_B(w^*)`, both on the step's batch: one forward pass per step), the next
step is the largest that keeps the bias within a fraction τ = 3 % of λ̂, under safeguards:

.. math::

    \log\epsilon \leftarrow \min\Big(
        \log\frac{8\tau\hat\lambda}{\overline{G} + n\beta^2\operatorname{tr}\Sigma_B},\;
        \log\epsilon + \tfrac12\,\operatorname{clip}\Big(\log\frac{1-\delta}{1-\bar a},
            -\log 4, \log 4\Big),\;
        \log\epsilon + \log 2,\;
        \log\epsilon_{\max}\Big), \quad\text{at least } \log\epsilon - \log 4.

While the latest window's λ̂ is more than 10 % above the recent windows before it, the chains
are still leaving w*, and the bias bound may stop ε from growing but not lower it: near w*
λ̂ grows like ε·t whatever ε, so a bound relative to it would lock ε small (the reason the
previous rule used d/2, the regular model's λ, which is 10–30× too loose on neural networks).

The second term is the acceptance floor: ā is the window's mean MALA acceptance and δ
(``target_acceptance``, default 0.98, :func:`llc.calibrate`'s rule 2) its floor, moved by the
law that the rejection rate grows about in proportion to the step (half-way, at most ×2 or ÷2
per window); where that law overshoots (the acceptance stays near 1 up to the stability
limit), the steps of the recent half of the windows seen meeting and missing δ bracket ε and
the step bisects the bracket (early windows expire: chains start at w*, and one noisy early
window must not fix a bracket for good).
The third is the divergence ceiling: a chain whose window turns non-finite, or runs away
(mean acceptance below 0.1: an unstable step can carry a chain to 10⁴⁰ in 25 finite steps),
is put back where the window began and counts as acceptance 0, and from then on ε stays at
least 2× below that step, so a too-large first guess shrinks ε instead of killing chains.
Before the first window ε is capped by the bias bound with :math:`\overline{G}` =
nβ² tr Σ_B (the noise at w*) and λ̂ = d/2 (an upper bound of any λ). The frozen step of the
draws is the smaller of the bias bound with :math:`\overline{G}` and λ̂ pooled over the
second half of the windows and the geometric mean of the second half's steps that met δ (if
none did: the smallest step of the second half), and at most the ceiling; if λ̂ still rose
in the last window, the bound is not applied below that mean and the result says so
(``attrs["step_size_settled"]``).

**SGHMC and SGNHT** adapt their curvature-equivalent SGLD step ε_c
(:func:`llc.samplers.langevin_equivalent_step`: 2η/(2 − α), h²) by the same rule, with the
minibatch noise counted at their noise-equivalent step ε_n (2η/α; 2h/ξ̄ with ξ̄ the chains'
mean thermostat at the end of the window, 2h/A before the first):
:math:`\hat b(\epsilon_c) = \tfrac18\big(\epsilon_c\overline G
+ (\epsilon_n - \epsilon_c)\,n\beta^2\operatorname{tr}\Sigma_B\big)`, and the acceptance is that
of a Langevin probe at ε_c from each position (their ``diagnose``). A change of SGNHT's step
moves its thermostat with the diffusion tied to it (``SGNHT.carry_state``).

For ``rmsprop_sgld`` the per-coordinate steps :math:`\epsilon_i = \epsilon / (\sqrt{\hat v_i}
+ a)` enter as weights: :math:`\overline G` averages
:math:`n\beta^2\sum_i (\epsilon_i/\epsilon)\,(g_i^2 + \Sigma_{B,ii})` (the squared gradient
g² recovered from the state's running mean), and the noise term is then already included.

**Why this estimate.** For a quadratic potential U with Hessian H (``localization``
included) and a minibatch gradient :math:`\nabla U_B = H(w - w^*) + \zeta` with noise of
covariance N independent of w, the stationary covariance S of SGLD solves
:math:`S = (I - \tfrac{\epsilon}{2}H)\,S\,(I - \tfrac{\epsilon}{2}H) + \epsilon I
+ \tfrac{\epsilon^2}{4}N`, and its trace against H gives, exactly and for any stable ε,

.. math::

    \mathbb E_\epsilon\big[U(w) - U(w^*)\big] = \frac d2
        + \frac{\epsilon}{8}\,\mathbb E_\epsilon\lVert\nabla U_B(w)\rVert^2 .

So the chain's own gradients measure its discretization bias: :math:`\tfrac{\epsilon}{8}
\operatorname{tr}(n\beta H_L)` from the curvature and :math:`\tfrac{\epsilon}{8}n\beta^2
\operatorname{tr}\Sigma_B` from independent minibatch noise (γ's share, about
:math:`\tfrac{\epsilon\gamma d}{8}`, is left out: γ ≪ nβ h here). With the default
``trace_batch="independent"`` the minibatches are independent of the position (drawn with
replacement), the trace is an unbiased estimate of L_n(w_t), and :math:`\hat b(\epsilon) =
\tfrac{\epsilon}{8}\overline G` with the noise inside Ḡ. With ``trace_batch="own"`` the
minibatches are drawn without replacement, a shuffled epoch at a time. Then the noise of an
epoch sums to zero, so it hardly inflates the stationary spread of the slow directions;
instead the trace's loss :math:`L_{B_t}(w_t)` is taken on a batch the earlier batches of the
epoch have pushed :math:`w_t` away from, which adds about
:math:`\tfrac{\epsilon}{4}n\beta^2\operatorname{tr}\Sigma_B` to λ̂. Counting the noise once
in :math:`\overline G` and once more explicitly, :math:`\hat b` is then the sum of the two,
:math:`\tfrac{\epsilon}{8}\operatorname{tr}(n\beta H_L) + \tfrac{\epsilon}{4}n\beta^2
\operatorname{tr}\Sigma_B` (the formula above). docs/step_size_auto.md has the measurements
behind both.

**On singular models b̂ undercounts**: the step's extra spread carries the chains to larger
weights, where curvature and minibatch noise are larger (docs/step_size_auto.md: on a DLN
with λ = 8 % of d/2, b̂ grew from 5 % of λ̂ at the end of the burn-in to 17 % over the
draws). The health check ``step-too-large`` reads b̂ over the draws for that reason.

The acceptance is a floor, not the target, because it measures a different thing: it is
scored on one minibatch and cannot see the minibatch noise, and no single target fits the
known-λ suite (at the steps that turned out accurate it was 0.9995 on the regular model,
0.996–0.997 on the two RRR problems, 0.985 on the deep linear network). Targeting an
acceptance of 0.995 gave a mean |error| of 4.6 ± 0.4 % over the suite's 4 problems × 6 seeds
(docs/step_size_auto.md has what this rule gives).

The steps use the same random streams as the runner (noise keys ``fold_in(chain key,
step)``, minibatch streams from step 0), so the draws continue them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backend import Backend
from ._programs import compiled_step
from .posterior import LocalizedPosterior
from .samplers import (RMSPropSGLD, langevin_equivalent_step, langevin_noise_equivalent_step,
                       rmsprop_denominator)

__all__ = ["StepSizeAdaptation", "adapt_step_size"]

_BIAS_TARGET = 0.03  # τ: the estimated step bias of λ̂ allowed, as a fraction of λ̂
_DAMPING = 0.5  # fraction of the log step change the rejection law asks for, per window
_MAX_LOG_CHANGE = math.log(4.0)  # at most ×4 or ÷4 per window (before damping: ×2, ÷2)
_TINY_REJECTION = 1e-4  # an all-accepted window counts as this rejection rate
_RISE = 0.1  # a window's λ̂ this far above the recent ones before it: still rising
_MAX_GROWTH = math.log(2.0)  # at most ×2 per window: λ̂ must catch up with a larger step
_CEILING_MARGIN = math.log(2.0)  # steps stay at least 2× below one where a chain diverged
_NOISE_PROBES = 16  # minibatch gradients at w* that estimate tr Σ_B
_RUNAWAY_ACCEPTANCE = 0.1  # a chain's window below this mean acceptance is undone, as diverged


@dataclass(frozen=True)
class StepSizeAdaptation:
    """What the burn-in's adaptation found.

    Attributes
    ----------
    step_size
        The frozen ε̄ used for the draws.
    history
        ``(first step of the window, ε used in it, mean acceptance, estimated bias b̂(ε),
        λ̂ of the recent windows)`` per window (b̂ and λ̂ in units of λ; module docs).
    states
        Each chain's sampler state at the end of the burn-in.
    warmup_loss
        (chain, step) minibatch losses of the burn-in (NaN where a window was undone).
    bias
        b̂(ε̄): the estimated step bias of λ̂ at the frozen step (pooled second half).
    llc
        λ̂ of the second half of the burn-in (the reference of the bias budget).
    settled
        False when λ̂ still rose in the last window (more than 10 % above the second half
        before it): the bias bound was then not applied below the acceptance's step, and
        b̂ ≤ τ λ̂ is not established.
    """

    step_size: float
    history: list[tuple[int, float, float, float, float]]
    states: list[Any]
    warmup_loss: np.ndarray
    bias: float = math.nan
    llc: float = math.nan
    settled: bool = True


def with_step_size(settings: Any, step_size: float | np.ndarray) -> Any:
    """A copy of the sampler settings with another ``step_size`` (a number or
    per-coordinate steps)."""
    return dataclasses.replace(settings, step_size=step_size)


def adapt_step_size(
    settings: Any,
    posterior: LocalizedPosterior,
    backend: Backend,
    dataset: Any,
    chain_keys: list[Any],
    *,
    num_steps: int,
    target: float,
    window: int,
    center_loss: Callable[[Any], Any],
    own_batch: bool = False,
) -> StepSizeAdaptation:
    """Run the burn-in of every chain, adapting the step size (module docs).

    ``center_loss(batch)`` is L_B(w*) on a minibatch (one forward pass per burn-in step: the
    windows' λ̂ is then paired by batch, as the minibatch baseline is). ``own_batch``: the
    trace takes each loss on the step's own batch of a shuffled epoch, whose bias
    (ε/4) nβ² tr Σ_B the estimate then includes."""
    tau = _BIAS_TARGET
    noise = minibatch_gradient_variance(posterior, backend, dataset, chain_keys[0])
    nbeta = posterior.nbeta
    dimension = int(posterior.center.shape[0])
    power = _GradientPower(settings, posterior, backend, noise if own_batch else None)
    scale = _EquivalentStep(settings, nbeta**2 * float(noise.sum()))

    def log_bias_bound(llc: float, mean_power: float) -> float:
        """log of the largest ε_c with b̂(ε_c) ≤ τ·llc."""
        if not (mean_power > 0 and math.isfinite(mean_power)):
            return math.inf
        return scale.log_bound(tau * llc, mean_power) if llc > 0 else -math.inf

    noise_term = 0.0 if power.weighted or not own_batch else nbeta**2 * float(noise.sum())
    # before the first window: λ̂ ≤ d/2 (the regular model's λ) and Ḡ ≥ nβ² tr Σ_B
    log_step = min(math.log(scale.epsilon(settings)), log_bias_bound(
        0.5 * dimension, (2.0 if own_batch else 1.0) * nbeta**2 * float(noise.sum())))
    log_ceiling = math.inf  # below every step at which a chain diverged
    split = [backend.split(key, 2) for key in chain_keys]
    noise_keys = [keys[0] for keys in split]
    streams = [dataset.stream(keys[1], 0) for keys in split]
    states = [settings.build(posterior).init(posterior.center) for _ in chain_keys]
    warmup_loss = np.full((len(chain_keys), num_steps), np.nan)
    history = []
    windows: list[_Window] = []
    window_settings = settings
    for start in range(0, num_steps, window):
        stop = min(start + window, num_steps)
        step_size = scale.step_size(settings, math.exp(log_step))
        previous, window_settings = window_settings, with_step_size(settings, step_size)
        carry = getattr(window_settings, "carry_state", None)
        if carry is not None:  # a state tied to the step (SGNHT's thermostat floor A = 0.1/h)
            states = [carry(state, previous) for state in states]
        step = compiled_step(backend, window_settings, posterior)
        acceptances, chain_powers, increases, thermostats = [], [], [], []
        diverged = False
        for chain in range(len(chain_keys)):
            state = states[chain]
            losses, centers, accepted, squares = [], [], [], []
            for step_index in range(start, stop):
                batch = next(streams[chain])
                new_state, info = step(backend.fold_in(noise_keys[chain], step_index), state,
                                       batch, True)
                losses.append(info.loss)
                centers.append(center_loss(batch))
                accepted.append(info.mala_acceptance)
                squares.append(power.of_step(state, new_state, info))
                state = new_state
            loss = backend.to_numpy(backend.stack(losses)).astype(np.float64)
            center = backend.to_numpy(backend.stack(centers)).astype(np.float64)
            acceptance = backend.to_numpy(backend.stack(accepted)).astype(np.float64)
            square = backend.to_numpy(backend.stack(squares)).astype(np.float64)
            position = backend.to_numpy(state.position)
            if np.isnan(acceptance).all() and np.isfinite(loss).all():
                raise ValueError(
                    f"`step_size='auto'` adapts to the MALA acceptance, which the sampler "
                    f"{settings!r} does not report: give `step_size` as a number")
            if np.isfinite(loss).all() and np.isfinite(acceptance).all() \
                    and np.isfinite(position).all() and np.isfinite(square).all() \
                    and acceptance.mean() >= _RUNAWAY_ACCEPTANCE:
                states[chain] = state
                warmup_loss[chain, start:stop] = loss
                acceptances.append(acceptance.mean())
                chain_powers.append(square.mean())
                if hasattr(state, "thermostat"):  # SGNHT: its friction sets the noise bias
                    thermostats.append(float(backend.to_numpy(state.thermostat)))
                increases.append(nbeta * float(np.mean(loss - center)))
            else:
                acceptances.append(0.0)
                diverged = True
        current = _Window(
            log_step=log_step, acceptance=float(np.mean(acceptances)),
            power=(float(np.mean(chain_powers)) + noise_term) if chain_powers else math.nan,
            llc=float(np.mean(increases)) if increases else math.nan,
            thermostat=float(np.mean(thermostats)) if thermostats else math.nan)
        windows.append(current)
        if diverged:
            log_ceiling = min(log_ceiling, log_step - _CEILING_MARGIN)
        recent = windows[len(windows) // 2:]  # early windows, still leaving w*, expire
        recent_llc = _pooled([w.llc for w in recent])
        scale.thermostat = current.thermostat
        history.append((start, step_size, current.acceptance,
                        scale.bias(math.exp(log_step), current.power), recent_llc))
        log_bias = (log_bias_bound(recent_llc, current.power) if math.isfinite(current.power)
                    else log_step)
        if _still_rising(recent):  # λ̂ not settled: the bound may stop ε, not lower it
            log_bias = max(log_bias, log_step)
        log_step = min(_acceptance_law(recent, log_step, current.acceptance, target),
                       log_bias, log_step + _MAX_GROWTH, log_ceiling)
        # at most ÷4 per window: one noisy window's λ̂ near 0 must not send ε to nothing
        log_step = max(log_step, min(current.log_step - _MAX_LOG_CHANGE, log_ceiling))
    second_half = windows[len(windows) // 2:]
    met = [w.log_step for w in second_half if w.acceptance >= target]
    settled = met or [min(w.log_step for w in second_half)]
    late_llc = _pooled([w.llc for w in second_half])
    late_power = _pooled([w.power for w in second_half])
    scale.thermostat = _pooled([w.thermostat for w in second_half])
    log_settled = sum(settled) / len(settled)
    rising = _still_rising(second_half)
    log_bias = log_bias_bound(late_llc, late_power)
    if rising:
        log_bias = max(log_bias, log_settled)
    log_frozen = min(log_settled, log_ceiling, log_bias)
    if not math.isfinite(log_frozen):  # no positive λ̂ in the second half: the smallest step
        log_frozen = min(min(w.log_step for w in second_half), log_ceiling)
    frozen = math.exp(log_frozen)
    return StepSizeAdaptation(scale.step_size(settings, frozen), history, states, warmup_loss,
                              bias=scale.bias(frozen, late_power), llc=late_llc,
                              settled=not rising)


class _EquivalentStep:
    """The adaptation works in the curvature-equivalent SGLD step ε_c
    (:func:`llc.samplers.langevin_equivalent_step`): ε itself for SGLD, RMSProp-SGLD and MALA,
    2η/(2 − α) for SGHMC, h² for SGNHT. The estimated bias at ε_c is
    (ε_c/8)·Ḡ + ((ε_n − ε_c)/8)·nβ² tr Σ_B, with ε_n the noise-equivalent step of the same
    setting (equal to ε_c for SGLD, 1/α-fold for SGHMC, 2h/ξ̄ for SGNHT with ξ̄ the chains'
    mean thermostat at the end of the window: under minibatch noise it rises above A)."""

    def __init__(self, settings: Any, noise_power: float) -> None:
        self.equivalent = langevin_equivalent_step(settings) is not None
        self.noise_power = noise_power
        self.settings = settings
        self.thermostat = math.nan

    def epsilon(self, settings: Any) -> float:
        equivalent = langevin_equivalent_step(settings)
        return equivalent if self.equivalent and equivalent is not None else settings.step_size

    def step_size(self, settings: Any, epsilon: float) -> float:
        """The sampler's own step for a curvature-equivalent ε_c."""
        if not self.equivalent:
            return epsilon
        return settings.with_curvature_equivalent_step(epsilon).step_size

    def bias(self, epsilon: float, mean_power: float) -> float:
        excess = 0.0
        if self.equivalent:
            at = self.settings.with_curvature_equivalent_step(epsilon)
            noise_step = (at.noise_equivalent_step(thermostat=self.thermostat)
                          if math.isfinite(self.thermostat) else langevin_noise_equivalent_step(at))
            assert noise_step is not None  # a sampler with an equivalent step has both
            excess = max(noise_step - epsilon, 0.0)
        return (epsilon * mean_power + excess * self.noise_power) / 8.0

    def log_bound(self, budget: float, mean_power: float) -> float:
        """log of the largest ε_c with bias(ε_c) ≤ budget (bias grows with ε_c)."""
        closed = math.log(8.0 * budget / mean_power)
        if not self.equivalent or self.bias(math.exp(closed), mean_power) <= budget * (1 + 1e-12):
            return closed  # the noise excess is zero (SGLD): the closed form is exact
        low, high = closed - 60.0, closed
        for _ in range(100):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if self.bias(math.exp(middle), mean_power) <= budget \
                else (low, middle)
        return low


@dataclass(frozen=True)
class _Window:
    """One burn-in window: log ε, the mean acceptance, Ḡ (+ the noise term), and λ̂ from the
    window's minibatch losses paired with L_B(w*) (NaN when every chain was undone)."""

    log_step: float
    acceptance: float
    power: float
    llc: float
    thermostat: float = math.nan


def _still_rising(recent: list[_Window]) -> bool:
    """The latest window's λ̂ is more than ``_RISE`` above the recent windows before it: the
    chains are still leaving w*, and a bias bound relative to their λ̂ would be too tight
    (near w* λ̂ grows like ε·t whatever ε, so lowering ε would not settle it)."""
    before = _pooled([w.llc for w in recent[:-1]])
    latest = recent[-1].llc
    return math.isfinite(latest) and (not math.isfinite(before) or latest > (1 + _RISE) * before)


def _pooled(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _acceptance_law(recent: list[_Window], log_step: float, acceptance: float,
                    target: float) -> float:
    """The next log ε the acceptance floor allows: the proportional law, damped, inside the
    bracket of the recent windows' steps that met and missed the floor (if they agree)."""
    rejection = max(1.0 - acceptance, _TINY_REJECTION)
    log_next = log_step + _DAMPING * min(
        max(math.log((1.0 - target) / rejection), -_MAX_LOG_CHANGE), _MAX_LOG_CHANGE)
    low = max((w.log_step for w in recent if w.acceptance >= target), default=-math.inf)
    high = min((w.log_step for w in recent if w.acceptance < target), default=math.inf)
    if math.isfinite(low) and math.isfinite(high) and low < high \
            and not low < log_next < high:
        log_next = 0.5 * (low + high)  # the law overshoots: bisect the bracket
    return log_next


class _GradientPower:
    """Per step, nβ²‖∇L_B(w)‖² (or for RMSProp-SGLD the ε_i/ε-weighted sum with the noise
    included): the quantity whose window mean is Ḡ in the module docs."""

    def __init__(self, settings: Any, posterior: LocalizedPosterior, backend: Backend,
                 noise: np.ndarray | None) -> None:
        self.nbeta2 = posterior.nbeta**2
        self.weighted = isinstance(settings, RMSPropSGLD)
        if self.weighted:
            self.beta2 = float(settings.beta2)
            self.eps_stability = float(settings.eps_stability)
            self.bias_correction = bool(settings.bias_correction)
            self.noise = None if noise is None else backend.asarray(noise, like=posterior.center)
        self.backend = backend

    def of_step(self, old: Any, new: Any, info: Any) -> Any:
        if not self.weighted:
            return self.nbeta2 * info.grad_norm * info.grad_norm
        xp = self.backend.namespace(new.square_avg)
        beta2 = self.beta2
        # v_t = b₂ v_{t−1} + (1 − b₂) g²: the step's g², per coordinate
        square = (new.square_avg - beta2 * old.square_avg) / (1.0 - beta2) \
            if beta2 > 0 else new.square_avg
        weight = 1.0 / rmsprop_denominator(xp, new.square_avg, new.count, beta2,
                                           self.eps_stability, self.bias_correction)  # ε_i / ε
        total = square if self.noise is None else square + self.noise
        return self.nbeta2 * xp.sum(weight * total)


def minibatch_gradient_variance(posterior: LocalizedPosterior, backend: Backend, dataset: Any,
                                key: Any) -> np.ndarray:
    """Σ_B,ii: the per-coordinate variance of the minibatch gradient at w* (its sum is
    tr Σ_B), from ``_NOISE_PROBES`` minibatches of a stream of its own (so the chains'
    streams are untouched)."""
    stream = dataset.stream(backend.fold_in(key, 0x5EED), 0)
    grads = [backend.to_numpy(posterior.loss_and_grad(posterior.center, next(stream))[1])
             for _ in range(_NOISE_PROBES)]
    stacked = np.stack(grads).astype(np.float64)
    return np.var(stacked, axis=0, ddof=1)
