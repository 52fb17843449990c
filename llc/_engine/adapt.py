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
+ (s\,\epsilon_n - \epsilon_c)\,n\beta^2\operatorname{tr}\Sigma_B\big)` with s the loss's share of
the noise's heat (:func:`llc._bias.estimated_step_bias`: the rest warms the localization
term; s ≈ 1 unless γ exceeds most of the loss's curvatures), and the acceptance is that
of a Langevin probe at ε_c from each position (their ``diagnose``). A change of SGNHT's step
moves its thermostat with the diffusion tied to it (``SGNHT.carry_state``). Because their
noise counts ~2/α times over, tr Σ_B is for them measured where the chains are, with a few
minibatch gradients per chain at the end of each window (``noise_at``; on a singular model
it grows tens of times as the chains spread from w*, and counted at w* the rule ran them
40–70 % hot).

A chain put back at the end of two windows in a row starts again from w*: one that escaped
early to where no step is stable for it would otherwise stay there, and its acceptance of 0
would drive ε towards 0.

For ``rmsprop_sgld`` the per-coordinate steps :math:`\epsilon_i = \epsilon / (\sqrt{\hat v_i}
+ a)` enter as weights: :math:`\overline G` averages
:math:`n\beta^2\sum_i (\epsilon_i/\epsilon)\,(g_i^2 + \Sigma_{B,ii})` (the weighted squared
gradient is the step's ``SampleInfo.grad_power``; the noise term, counted only with
``trace_batch="own"``, is weighted by each chain's preconditioner at the end of the window).

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
weights, where curvature and minibatch noise are larger, so b̂ over the draws exceeds the
burn-in's (docs/step_size_auto.md measures it). The health check ``step-too-large`` reads b̂
over the draws for that reason.

The acceptance is a floor, not the target, because it measures a different thing: it is
scored on one minibatch and cannot see the minibatch noise, and no single acceptance marks
the accurate step on every problem of the known-λ suite (docs/step_size_auto.md, "What did
not work", has the acceptances and the errors of targeting one).

The windows are the runner's own steps (:class:`StepSizeTuner`; the runner's warm-up phase,
sequential or vectorized, every step diagnosed), so the draws continue their random streams,
and a checkpoint written in the burn-in resumes it with the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._backend import Backend
from .._data import DataSource
from .._bias import estimated_step_bias
from .programs import compiled_step
from ..posterior import LocalizedPosterior
from ..samplers import RMSPropSGLD, langevin_equivalent_step, langevin_noise_equivalent_step
from ..samplers.rmsprop_sgld import rmsprop_denominator

__all__ = ["StepSizeAdaptation", "StepSizeTuner", "minibatch_gradient_variance", "with_step_size"]

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
    settings
        The sampler settings of the draws, with the frozen step ε̄.
    history
        ``(first step of the window, ε used in it, mean acceptance, estimated bias b̂(ε),
        λ̂ of the recent windows)`` per window (b̂ and λ̂ in units of λ; module docs).
    bias
        b̂(ε̄): the estimated step bias of λ̂ at the frozen step (pooled second half).
    llc
        λ̂ of the second half of the burn-in (the reference of the bias budget).
    settled
        False when λ̂ still rose in the last window (more than 10 % above the second half
        before it): the bias bound was then not applied below the acceptance's step, and
        b̂ ≤ τ λ̂ is not established.
    """

    settings: Any
    history: list[tuple[int, float, float, float, float]]
    bias: float = math.nan
    llc: float = math.nan
    settled: bool = True

    @property
    def step_size(self) -> float:
        """The frozen ε̄ of the draws."""
        return float(self.settings.step_size)


def with_step_size(settings: Any, step_size: float | np.ndarray) -> Any:
    """A copy of the sampler settings with another ``step_size`` (a number or
    per-coordinate steps)."""
    return dataclasses.replace(settings, step_size=step_size)


class StepSizeTuner:
    """The controller of ``step_size="auto"`` between the burn-in's windows (module docs).

    The runner (:func:`llc._runner.run_chains`) advances the chains one window of
    :attr:`window` steps at a time, every step diagnosed, and records per step the minibatch
    loss, L_B(w*) on the same batch (one forward pass), the MALA acceptance, the gradient's
    norm and ``SampleInfo.grad_power``. Around each window it calls :meth:`begin_window` (the
    sampler of the window) and :meth:`end_window` (which chains to put back where the window
    began), and after the last window :meth:`begin_draws` (the sampler of the draws). The state
    between windows is small and goes into checkpoints (:meth:`checkpoint_attrs`,
    :meth:`restore`), so a run interrupted in its burn-in resumes with the same numbers.

    Parameters
    ----------
    settings
        The sampler settings the chains' states were initialized with (their step is the
        first guess).
    posterior, backend
        The run's.
    noise
        Σ_B,ii at w* (:func:`minibatch_gradient_variance`), whose sum is tr Σ_B.
    num_steps
        Burn-in steps (the windows cover them; the last one may be shorter).
    target
        δ, the floor of the windows' mean MALA acceptance.
    window
        Steps per window.
    own_batch
        The trace takes each loss on the step's own batch of a shuffled epoch, whose bias
        (ε/4) nβ² tr Σ_B the estimate then includes.
    noise_at
        ``noise_at(position, chain, start)``: tr Σ_B at a chain's position at the end of the
        window that began at ``start`` (a few minibatch gradients on a stream of its own), for
        a momentum sampler, whose noise bias is amplified (ε_n ≫ ε_c) and must be counted
        where the chains are: on a singular model tr Σ_B grows tens of times as they spread
        from w*. None: tr Σ_B at w* throughout.
    chain_ids, exchange
        Under a distributed launch: the global chain index of each of this process's chains,
        and ``exchange(obj)`` → every process's ``obj`` (:meth:`ProcessGroup.all_gather`).
        Each window's per-chain numbers are then exchanged and every process takes the same
        decision from all chains, in chain order, as one process would.
    """

    def __init__(self, settings: Any, posterior: LocalizedPosterior, backend: Backend,
                 noise: np.ndarray, *, num_steps: int, target: float, window: int,
                 own_batch: bool = False,
                 noise_at: Callable[[Any, int, int], float] | None = None,
                 chain_ids: list[int] | None = None,
                 exchange: Callable[[Any], list[Any]] | None = None) -> None:
        self.settings = settings
        self.posterior = posterior
        self.backend = backend
        self.num_steps = num_steps
        self.target = target
        self.window = window
        self.own_batch = own_batch
        self.noise_at = noise_at
        self.chain_ids = None if chain_ids is None else list(chain_ids)
        self.exchange = exchange
        nbeta = posterior.nbeta
        self.weighted = isinstance(settings, RMSPropSGLD)
        self.noise = noise if (own_batch and self.weighted) else None
        self.scale = _EquivalentStep(settings, nbeta**2 * float(noise.sum()),
                                    float(posterior.localization))
        self.noise_term = 0.0 if self.weighted or not own_batch else nbeta**2 * float(noise.sum())
        dimension = int(posterior.center.shape[0])
        # before the first window: λ̂ ≤ d/2 (the regular model's λ) and Ḡ ≥ nβ² tr Σ_B
        self.log_step = min(math.log(self.scale.epsilon(settings)), self._log_bias_bound(
            0.5 * dimension, (2.0 if own_batch else 1.0) * nbeta**2 * float(noise.sum()),
            measured=False))
        self.log_ceiling = math.inf  # below every step at which a chain diverged
        self.undone_before: set[int] = set()  # the chains put back after the last window
        self.windows: list[_Window] = []
        self.history: list[tuple[int, float, float, float, float]] = []
        self.window_settings: Any = None  # the settings of the window begun last
        self._begun = False  # restored from a checkpoint written after a window began
        self.adaptation: StepSizeAdaptation | None = None

    def _log_bias_bound(self, llc: float, mean_power: float, measured: bool = True) -> float:
        """log of the largest ε_c with b̂(ε_c) ≤ τ·llc (``measured``: llc is a λ̂, by which
        the noise's share is then split; else a bound, and the noise counts whole)."""
        if not (mean_power > 0 and math.isfinite(mean_power)):
            return math.inf
        if not llc > 0:
            return -math.inf
        return self.scale.log_bound(_BIAS_TARGET * llc, mean_power, llc if measured else 0.0)

    def _algorithm(self, settings: Any) -> Any:
        algorithm = settings.build(self.posterior)
        return algorithm._replace(step=compiled_step(self.backend, settings, self.posterior))

    def begin_window(self, states: list[Any]) -> tuple[Any, list[Any]]:
        """The sampler of the next window and the chains' states moved to it (SGNHT's
        thermostat is tied to its step: ``carry_state``). A tuner restored from a checkpoint
        written after its window began returns that window's sampler, the states as they are."""
        if self._begun:
            self._begun = False
            return self._algorithm(self.window_settings), states
        step_size = self.scale.step_size(self.settings, math.exp(self.log_step))
        previous = self.settings if self.window_settings is None else self.window_settings
        self.window_settings = with_step_size(self.settings, step_size)
        carry = getattr(self.window_settings, "carry_state", None)
        if carry is not None:
            states = [carry(state, previous) for state in states]
        return self._algorithm(self.window_settings), states

    def end_window(self, start: int, records: dict[int, Any], states: list[Any]
                   ) -> tuple[set[int], set[int]]:
        """Score the window that began at ``start`` and choose the next step.

        ``records`` maps each chain that ran the window (not one that raised) to its
        :class:`llc._engine.runner.BlockRecord`; ``states`` are the chains' states at its
        end. Returns the chains that diverged or ran away, which the runner puts back where
        the window began (they count as acceptance 0, and ε then stays 2× below this
        window's step), and those of them that had been put back at the end of the window
        before too, which the runner starts again from w* instead: a chain that escaped
        early to where no step is stable for it would otherwise stay there, and its
        acceptance of 0 would drive ε towards 0 (on a deep DLN it did, to 10⁻¹⁶)."""
        backend, nbeta = self.backend, self.posterior.nbeta
        log_step = self.log_step
        step_size = float(self.window_settings.step_size)
        rows: dict[int, _ChainWindow | None] = {}  # global chain: its numbers, None: undone
        for chain, record in sorted(records.items()):
            values = record.values
            loss, center = values["loss"], values["baseline_loss"]
            acceptance = values["mala_acceptance"]
            square = (nbeta**2 * values["grad_power"] if self.weighted
                      else nbeta**2 * values["grad_norm"] * values["grad_norm"])
            state = states[chain]
            position = backend.to_numpy(state.position)
            if np.isnan(acceptance).all() and np.isfinite(loss).all():
                raise ValueError(
                    f"`step_size='auto'` adapts to the MALA acceptance, which the sampler "
                    f"{self.settings!r} does not report: give `step_size` as a number")
            if np.isfinite(loss).all() and np.isfinite(acceptance).all() \
                    and np.isfinite(position).all() and np.isfinite(square).all() \
                    and acceptance.mean() >= _RUNAWAY_ACCEPTANCE:
                chain_power = square.mean()
                if self.noise is not None:  # RMSProp-SGLD, own batch: Σ (ε_i/ε) Σ_B,ii
                    chain_power += nbeta**2 * float(np.sum(self.noise / self._denominator(state)))
                thermostat = (float(backend.to_numpy(state.thermostat))  # SGNHT: its friction
                              if hasattr(state, "thermostat") else math.nan)  # sets the bias
                noise = (nbeta**2 * self.noise_at(state.position, chain, start)
                         if self.noise_at is not None else math.nan)
                rows[self._global(chain)] = _ChainWindow(
                    float(acceptance.mean()), float(chain_power), thermostat, noise,
                    nbeta * float(np.mean(loss - center)))
            else:
                rows[self._global(chain)] = None
        if self.exchange is not None:  # every process: every chain's row, then one decision
            rows = {chain: row for part in self.exchange(rows) for chain, row in part.items()}
        acceptances, chain_powers, increases, thermostats, noises = [], [], [], [], []
        undone: set[int] = set()
        for chain, row in sorted(rows.items()):  # in chain order, as one process adds them
            if row is None:
                acceptances.append(0.0)
                undone.add(chain)
                continue
            acceptances.append(row.acceptance)
            chain_powers.append(row.power)
            if math.isfinite(row.thermostat):
                thermostats.append(row.thermostat)
            if math.isfinite(row.noise):
                noises.append(row.noise)
            increases.append(row.increase)
        restart = undone & self.undone_before
        self.undone_before = undone - restart
        put_back, restart = self._local(undone - restart), self._local(restart)
        if not acceptances:  # no chain ran (every one raised): nothing to learn
            return put_back, restart
        current = _Window(
            log_step=log_step, acceptance=float(np.mean(acceptances)),
            power=(float(np.mean(chain_powers)) + self.noise_term) if chain_powers else math.nan,
            llc=float(np.mean(increases)) if increases else math.nan,
            thermostat=float(np.mean(thermostats)) if thermostats else math.nan,
            noise=float(np.mean(noises)) if noises else math.nan)
        self.windows.append(current)
        if undone:
            self.log_ceiling = min(self.log_ceiling, log_step - _CEILING_MARGIN)
        recent = self.windows[len(self.windows) // 2:]  # early windows, still leaving w*, expire
        recent_llc = _pooled([w.llc for w in recent])
        self.scale.thermostat, self.scale.noise_here = current.thermostat, current.noise
        self.history.append((start, step_size, current.acceptance,
                             self.scale.bias(math.exp(log_step), current.power, recent_llc),
                             recent_llc))
        log_bias = (self._log_bias_bound(recent_llc, current.power)
                    if math.isfinite(current.power) else log_step)
        if _still_rising(recent):  # λ̂ not settled: the bound may stop ε, not lower it
            log_bias = max(log_bias, log_step)
        log_next = min(_acceptance_law(recent, log_step, current.acceptance, self.target),
                       log_bias, log_step + _MAX_GROWTH, self.log_ceiling)
        # at most ÷4 per window: one noisy window's λ̂ near 0 must not send ε to nothing
        self.log_step = max(log_next, min(current.log_step - _MAX_LOG_CHANGE, self.log_ceiling))
        return put_back, restart

    def _global(self, chain: int) -> int:
        return chain if self.chain_ids is None else self.chain_ids[chain]

    def _local(self, chains: set[int]) -> set[int]:
        """This process's indices of the (global) ``chains`` it runs."""
        if self.chain_ids is None:
            return set(chains)
        return {index for index, chain in enumerate(self.chain_ids) if chain in chains}

    def _denominator(self, state: Any) -> np.ndarray:
        """√v̂ + a of an RMSProp-SGLD state, on the host (ε_i = ε / it)."""
        settings = self.settings
        return rmsprop_denominator(
            np, self.backend.to_numpy(state.square_avg).astype(np.float64),
            float(self.backend.to_numpy(state.count)), float(settings.beta2),
            float(settings.eps_stability), bool(settings.bias_correction))

    def finish(self) -> StepSizeAdaptation:
        """The frozen step of the draws (module docs); also kept as :attr:`adaptation`."""
        if not self.windows:  # every chain raised: the result reports their errors
            current = self.settings if self.window_settings is None else self.window_settings
            self.adaptation = StepSizeAdaptation(current, self.history, settled=False)
            return self.adaptation
        if all(w.acceptance == 0 for w in self.windows):
            raise RuntimeError(
                "`step_size='auto'`: every chain diverged at every step size tried (from "
                f"{self.history[0][1]:.3g} down to {self.history[-1][1]:.3g}); check "
                "that `params` is a minimum of `loss_fn`, or raise `localization`")
        second_half = self.windows[len(self.windows) // 2:]
        met = [w.log_step for w in second_half if w.acceptance >= self.target]
        settled = met or [min(w.log_step for w in second_half)]
        late_llc = _pooled([w.llc for w in second_half])
        late_power = _pooled([w.power for w in second_half])
        self.scale.thermostat = _pooled([w.thermostat for w in second_half])
        self.scale.noise_here = _pooled([w.noise for w in second_half])
        log_settled = sum(settled) / len(settled)
        rising = _still_rising(second_half)
        log_bias = self._log_bias_bound(late_llc, late_power)
        if rising:
            log_bias = max(log_bias, log_settled)
        log_frozen = min(log_settled, self.log_ceiling, log_bias)
        if not math.isfinite(log_frozen):  # no positive λ̂ in the second half: the smallest
            log_frozen = min(min(w.log_step for w in second_half), self.log_ceiling)
        frozen = math.exp(log_frozen)
        self.adaptation = StepSizeAdaptation(
            with_step_size(self.settings, self.scale.step_size(self.settings, frozen)),
            self.history, bias=self.scale.bias(frozen, late_power, late_llc), llc=late_llc,
            settled=not rising)
        return self.adaptation

    def begin_draws(self, states: list[Any]) -> tuple[Any, list[Any]]:
        """:meth:`finish`, then the sampler of the draws at the frozen step and the states
        moved to it as between windows (SGNHT's thermostat: left at the last window's A, a
        frozen h half that window's ran the chains at twice the temperature)."""
        settings = self.finish().settings
        carry = getattr(settings, "carry_state", None)
        if carry is not None and self.window_settings is not None:
            states = [carry(state, self.window_settings) for state in states]
        return self._algorithm(settings), states

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_attrs(self) -> dict[str, Any]:
        """``{"step_size_tuning": JSON}`` while the burn-in runs (after a window has begun):
        what :meth:`restore` needs; empty once :meth:`finish` has run."""
        if self.adaptation is not None or self.window_settings is None:
            return {}
        return {"step_size_tuning": json.dumps({
            "windows": [dataclasses.astuple(w) for w in self.windows], "history": self.history,
            "log_step": self.log_step, "log_ceiling": self.log_ceiling,
            "undone_before": sorted(self.undone_before),
            "window_step_size": float(self.window_settings.step_size)})}

    def restore(self, saved: str) -> None:
        """Continue from :meth:`checkpoint_attrs`' JSON: the window begun last is running
        (its chains' states are already moved to it), so the next :meth:`begin_window`
        returns its sampler unchanged."""
        state = json.loads(saved)
        self.windows = [_Window(*row) for row in state["windows"]]
        self.history = [tuple(row) for row in state["history"]]  # type: ignore[misc]
        self.log_step, self.log_ceiling = float(state["log_step"]), float(state["log_ceiling"])
        self.undone_before = set(state.get("undone_before", []))
        if self.windows:
            self.scale.thermostat = self.windows[-1].thermostat
            self.scale.noise_here = self.windows[-1].noise
        self.window_settings = with_step_size(self.settings, state["window_step_size"])
        self._begun = True


class _EquivalentStep:
    """The adaptation works in the curvature-equivalent SGLD step ε_c
    (:func:`llc.samplers.langevin_equivalent_step`): ε itself for SGLD, RMSProp-SGLD and MALA,
    2η/(2 − α) for SGHMC, h² for SGNHT. The estimated bias at ε_c is
    (ε_c/8)·(Ḡ − N) + (ε_n/8)·s·N with N = nβ² tr Σ_B (:mod:`llc._bias`), ε_n the
    noise-equivalent step of the same setting (equal to ε_c for SGLD, 1/α-fold for SGHMC, 2h/ξ̄
    for SGNHT with ξ̄ the chains' mean thermostat at the end of the window: under minibatch
    noise it rises above A) and s the loss's share of the noise's heat. N is
    :attr:`noise_here`, measured at the chains' positions, where known (the momentum
    samplers), else :attr:`noise_power`, at w*, counted whole (s = 1)."""

    def __init__(self, settings: Any, noise_power: float, localization: float) -> None:
        self.equivalent = langevin_equivalent_step(settings) is not None
        self.noise_power = noise_power
        self.localization = localization
        self.settings = settings
        self.thermostat = math.nan
        self.noise_here = math.nan

    def epsilon(self, settings: Any) -> float:
        equivalent = langevin_equivalent_step(settings)
        return equivalent if self.equivalent and equivalent is not None else settings.step_size

    def step_size(self, settings: Any, epsilon: float) -> float:
        """The sampler's own step for a curvature-equivalent ε_c."""
        if not self.equivalent:
            return epsilon
        return settings.with_curvature_equivalent_step(epsilon).step_size

    def bias(self, epsilon: float, mean_power: float, llc: float = 0.0) -> float:
        """b̂ at ε_c (:func:`llc._bias.estimated_step_bias`; ``llc`` = λ̂ for the noise's
        share, 0 to count it whole)."""
        noise_step: float | None = epsilon
        if self.equivalent:
            at = self.settings.with_curvature_equivalent_step(epsilon)
            noise_step = (at.noise_equivalent_step(thermostat=self.thermostat)
                          if math.isfinite(self.thermostat) else langevin_noise_equivalent_step(at))
        assert noise_step is not None  # a sampler with an equivalent step has both
        if math.isfinite(self.noise_here):  # measured where the chains are: split by its share
            return estimated_step_bias(epsilon, noise_step, mean_power, self.noise_here, llc,
                                       self.localization)
        return estimated_step_bias(epsilon, noise_step, mean_power, self.noise_power, 0.0,
                                   self.localization)

    def log_bound(self, budget: float, mean_power: float, llc: float = 0.0) -> float:
        """log of the largest ε_c with bias(ε_c) ≤ budget (bias grows with ε_c)."""
        closed = math.log(8.0 * budget / mean_power)
        if not self.equivalent or \
                self.bias(math.exp(closed), mean_power, llc) <= budget * (1 + 1e-12):
            return closed  # the noise excess is zero (SGLD): the closed form is exact
        low, high = closed - 60.0, closed
        for _ in range(100):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if self.bias(math.exp(middle), mean_power, llc) <= budget \
                else (low, middle)
        return low


class _ChainWindow(NamedTuple):
    """One chain's numbers of a window (what processes exchange): its mean acceptance, its
    mean nβ²‖∇L_B‖² (weighted for RMSProp-SGLD), SGNHT's thermostat and nβ² tr Σ_B at its
    end (NaN where not measured), and nβ (L_B(w_t) − L_B(w*)) averaged over the window."""

    acceptance: float
    power: float
    thermostat: float
    noise: float
    increase: float


@dataclass(frozen=True)
class _Window:
    """One burn-in window: log ε, the mean acceptance, Ḡ (+ the noise term), and λ̂ from the
    window's minibatch losses paired with L_B(w*) (NaN when every chain was undone); SGNHT's
    mean thermostat and a momentum sampler's nβ² tr Σ_B at the chains' end positions."""

    log_step: float
    acceptance: float
    power: float
    llc: float
    thermostat: float = math.nan
    noise: float = math.nan  # nβ² tr Σ_B at the chains' positions (momentum samplers)


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


def minibatch_gradient_variance(posterior: LocalizedPosterior, backend: Backend,
                                dataset: DataSource, key: Any, *, position: Any = None,
                                probes: int = _NOISE_PROBES) -> np.ndarray:
    """Σ_B,ii: the per-coordinate variance of the minibatch gradient at ``position`` (w* by
    default; its sum is tr Σ_B), from ``probes`` minibatches of a stream of its own (so the
    chains' streams are untouched). Welford's update, in place and in the gradient's
    floating type (at least float32): three parameter-sized buffers and one gradient at a
    time, whatever ``probes``."""
    at = posterior.center if position is None else position
    stream = dataset.stream(backend.fold_in(key, 0x5EED), 0)
    mean = m2 = scratch = np.empty(0)
    for count in range(1, probes + 1):
        grad = backend.to_numpy(posterior.loss_and_grad(at, next(stream))[1])  # a copy: ours
        if count == 1:
            mean = grad.astype(np.result_type(grad.dtype, np.float32), copy=False)
            m2, scratch = np.zeros_like(mean), np.empty_like(mean)
            continue
        grad = grad.astype(mean.dtype, copy=False)
        grad -= mean  # δ = g − mean
        np.multiply(grad, grad, out=scratch)
        scratch *= (count - 1) / count
        m2 += scratch  # M2 += δ² (k − 1)/k
        grad *= 1.0 / count
        mean += grad
    m2 /= probes - 1
    return m2
