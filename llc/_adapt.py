r"""``step_size="auto"``: the step size adapted during burn-in to a target MALA acceptance.

The burn-in is cut into windows of ``window`` steps. In each window every chain steps with the
current ε and diagnoses every move (the MALA acceptance probability of the Langevin move on
its minibatch, DESIGN §2: one more gradient per step). With ā the mean acceptance over the
window's steps and the chains and δ the target, the step is then corrected by the law that
the rejection rate grows about in proportion to the step (1 − a ≈ cε, exact to first order
for Langevin moves), half-way and by at most a factor 2:

.. math::

    \log\epsilon \leftarrow \log\epsilon
        + \tfrac12\,\operatorname{clip}\Big(\log\frac{1-\delta}{1-\bar a},\,
        -\log 4,\, \log 4\Big).

Where that law overshoots — the acceptance stays near 1 right up to the stability limit, as
for a Gaussian posterior, whose MALA rejection grows like ε³ there, not ε — the last steps
seen meeting and missing the target bracket ε and the next step bisects the bracket (in
log ε). A chain whose window turns non-finite is put back where the window began and counts
as acceptance 0, so a too-large first guess shrinks ε instead of killing chains; from then on
ε stays at least 2× below that step. After the burn-in, the geometric mean of the steps of
the second half of the windows that met the target is frozen for the draws (if none did: the
last step that met it, or else the smallest step of the second half). A second cap bounds the bias that the minibatch noise in the gradient adds to λ̂, which the
acceptance (computed on one minibatch) cannot see: for SGLD near a minimum the noise
½εnβ(∇L_B − ∇L_n) adds about (ε nβ² / 8) tr Σ_B to E[nβ L] (from the stationary covariance
of the discretized dynamics), with tr Σ_B the summed variance of the minibatch gradient,
measured at w* on 16 minibatches before the burn-in. ε is kept where that is at most 2 % of
d/2, the regular model's λ and an upper bound of any λ: ε ≤ 8 · 2 % · (d/2) / (nβ² tr Σ_B).
(Relative to a singular model's smaller λ the bound is looser by d/(2λ); a bound relative to
the λ̂ of the burn-in itself locked the steps small: chains near w* show a small λ̂, which
capped ε, which kept them near w*.) The steps use the same random streams as
the runner (noise keys
``fold_in(chain key, step)``, minibatch streams from step 0), so the draws continue them.

Why not Nesterov dual averaging (Hoffman & Gelman 2014, as in Stan)? Its constants are tuned
for about a thousand updates; a burn-in of 1000 steps gives 40 windows, and on the demo's deep
linear network it froze at a step 2.4× too large (acceptance 0.957 in the draws, λ̂ +28 %).
The proportional law converges in a few windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backend import Backend
from .posterior import LocalizedPosterior

__all__ = ["StepSizeAdaptation", "adapt_step_size"]

_DAMPING = 0.5  # fraction of the log step change the rejection law asks for, per window
_MAX_LOG_CHANGE = math.log(4.0)  # at most ×4 or ÷4 per window (before damping: ×2, ÷2)
_TINY_REJECTION = 1e-4  # an all-accepted window counts as this rejection rate
_CEILING_MARGIN = math.log(2.0)  # steps stay at least 2× below one where a chain diverged
_NOISE_BIAS = 0.02  # the largest relative bias of λ̂ allowed from minibatch-gradient noise
_NOISE_PROBES = 16  # minibatch gradients at w* that estimate tr Σ_B


@dataclass(frozen=True)
class StepSizeAdaptation:
    """What the burn-in's adaptation found.

    Attributes
    ----------
    step_size
        The frozen ε̄ used for the draws.
    history
        ``(first step of the window, ε used in it, mean acceptance)`` per window.
    states
        Each chain's sampler state at the end of the burn-in.
    warmup_loss
        (chain, step) minibatch losses of the burn-in (NaN where a window was undone).
    """

    step_size: float
    history: list[tuple[int, float, float]]
    states: list[Any]
    warmup_loss: np.ndarray


def with_step_size(settings: Any, step_size: float) -> Any:
    """A copy of the sampler settings with another ``step_size``."""
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
    compile_step: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> StepSizeAdaptation:
    """Run the burn-in of every chain, adapting the step size (module docs)."""
    noise_trace = minibatch_gradient_variance(posterior, backend, dataset, chain_keys[0])
    nbeta = posterior.nbeta
    half_dimension = 0.5 * int(posterior.center.shape[0])
    log_noise_cap = (math.log(8 * _NOISE_BIAS * half_dimension / (nbeta**2 * noise_trace))
                     if noise_trace > 0 else math.inf)
    log_step = math.log(settings.step_size)
    log_ceiling = math.inf  # below every step at which a chain diverged
    log_low, log_high = -math.inf, math.inf  # steps last seen meeting / missing the target
    split = [backend.split(key, 2) for key in chain_keys]
    noise_keys = [keys[0] for keys in split]
    streams = [dataset.stream(keys[1], 0) for keys in split]
    states = [settings.build(posterior).init(posterior.center) for _ in chain_keys]
    warmup_loss = np.full((len(chain_keys), num_steps), np.nan)
    history = []
    for start in range(0, num_steps, window):
        stop = min(start + window, num_steps)
        step_size = math.exp(log_step)
        step = compile_step(settings_step(settings, step_size, posterior))
        acceptances = []
        diverged = False
        for chain in range(len(chain_keys)):
            state = states[chain]
            losses, accepted = [], []
            for step_index in range(start, stop):
                state, info = step(backend.fold_in(noise_keys[chain], step_index), state,
                                   next(streams[chain]), True)
                losses.append(info.loss)
                accepted.append(info.mala_acceptance)
            loss = backend.to_numpy(backend.stack(losses)).astype(np.float64)
            acceptance = backend.to_numpy(backend.stack(accepted)).astype(np.float64)
            position = backend.to_numpy(state.position)
            if np.isnan(acceptance).all() and np.isfinite(loss).all():
                raise ValueError(
                    f"`step_size='auto'` adapts to the MALA acceptance, which the sampler "
                    f"{settings.name!r} does not report (sghmc and sgnht move a momentum): use "
                    "sgld, rmsprop_sgld or mala, or give `step_size` as a number")
            if np.isfinite(loss).all() and np.isfinite(acceptance).all() \
                    and np.isfinite(position).all():
                states[chain] = state
                warmup_loss[chain, start:stop] = loss
                acceptances.append(acceptance.mean())
            else:
                acceptances.append(0.0)
                diverged = True
        mean_acceptance = float(np.mean(acceptances))
        history.append((start, step_size, mean_acceptance))
        if diverged:
            log_ceiling = min(log_ceiling, math.log(step_size) - _CEILING_MARGIN)
        if mean_acceptance >= target:  # ε is small enough: a lower end of the bracket
            log_low = math.log(step_size)
            log_high = log_high if log_high > log_low else math.inf  # contradicted: drop it
        else:
            log_high = math.log(step_size)
            log_low = log_low if log_low < log_high else -math.inf
        rejection = max(1.0 - mean_acceptance, _TINY_REJECTION)
        log_step += _DAMPING * min(max(math.log((1.0 - target) / rejection), -_MAX_LOG_CHANGE),
                                   _MAX_LOG_CHANGE)
        if math.isfinite(log_low) and math.isfinite(log_high) \
                and not log_low < log_step < log_high:
            log_step = 0.5 * (log_low + log_high)  # the law overshoots: bisect the bracket
        log_step = min(log_step, log_ceiling, log_noise_cap)
    second_half = history[len(history) // 2:]
    met = [math.log(size) for _, size, acceptance in second_half if acceptance >= target]
    fallback = log_low if math.isfinite(log_low) else min(math.log(s) for _, s, _ in second_half)
    settled = met or [fallback]
    frozen = math.exp(min(sum(settled) / len(settled), log_ceiling, log_noise_cap))
    return StepSizeAdaptation(frozen, history, states, warmup_loss)


def minibatch_gradient_variance(posterior: LocalizedPosterior, backend: Backend, dataset: Any,
                                key: Any) -> float:
    """tr Σ_B: the summed variance of the minibatch gradient at w*, from ``_NOISE_PROBES``
    minibatches of a stream of its own (so the chains' streams are untouched)."""
    stream = dataset.stream(backend.fold_in(key, 0x5EED), 0)
    grads = [backend.to_numpy(posterior.loss_and_grad(posterior.center, next(stream))[1])
             for _ in range(_NOISE_PROBES)]
    stacked = np.stack(grads).astype(np.float64)
    return float(np.sum(np.var(stacked, axis=0, ddof=1)))


def settings_step(settings: Any, step_size: float, posterior: LocalizedPosterior
                  ) -> Callable[..., Any]:
    """The pure step of ``settings`` with ``step_size``, bound to ``posterior``."""
    return with_step_size(settings, step_size).build(posterior).step
