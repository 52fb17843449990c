"""Stochastic gradient Nosé–Hoover thermostat."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from .._backend import Array, Key
from .._validate import positive_float
from ..posterior import LocalizedPosterior
from ._base import (Check, Sampler, SampleInfo, _describe, _langevin_probe, _scalar_step,
                    _sqrt, _zero_scalar, step_size_value)

__all__ = ["SGNHT", "SGNHT_FRICTION", "SGNHTState"]

#: SGNHT's default friction per step A·h (``diffusion=None``): SGHMC's default α.
SGNHT_FRICTION = 0.1


class SGNHTState(NamedTuple):
    """State of SGNHT: the position, the momentum p and the thermostat ξ (0-d)."""

    position: Array
    momentum: Array
    thermostat: Array


@dataclass(frozen=True)
class SGNHT(Sampler):
    r"""Stochastic gradient Nosé–Hoover thermostat (Ding et al. 2014; docs/design.md §2):
    ``SGNHT(step_size=1e-3)``.

    With :math:`U = n\beta L_B + \tfrac{\gamma}{2}\lVert w - w^*\rVert^2`, d parameters,
    step h and diffusion A:

    .. math::

        p_{t+1} &= p_t - \xi_t\, p_t\, h - \nabla U(w_t)\, h + \sqrt{2 A h}\;\eta_t,
                  \qquad \eta_t \sim \mathcal N(0, I), \\
        w_{t+1} &= w_t + p_{t+1}\, h, \\
        \xi_{t+1} &= \xi_t + \Big(\frac{p_{t+1}^\top p_{t+1}}{d} - 1\Big)\, h,
        \qquad \xi_0 = A,\ p_0 = 0.

    The thermostat ξ is a friction that adapts until the kinetic temperature
    :math:`p^\top p / d` is 1: unknown (isotropic) minibatch gradient noise heats the
    momentum, and ξ rises above A to absorb it. With ξ frozen at A (devinterp 2.x's bug:
    the thermostat is computed but never applied) it is SGHMC with η = h², α = Ah, which
    samples too hot under gradient noise.

    Parameters
    ----------
    step_size
        h > 0 (a position moves by about h per step; h² plays the role of SGLD's ε / 2).
    diffusion
        A > 0, the injected noise and the thermostat's starting value. The default (None)
        is A = 0.1 / h, a friction of 0.1 per step (SGHMC's default α). Why not a constant:
        the thermostat holds the *mean* kinetic energy, but minibatch noise heats the
        directions the loss curves in (its covariance follows the curvature), which are the
        ones λ̂ measures; those run hotter while the flat ones cool. Per coordinate the
        heating is h N_i / (4ξ) (N_i the noise variance of ∇U), so SGNHT's noise bias is that
        of SGLD at the step 2h/ξ instead of h². With A = 1 and h ~ 10⁻³ that step is ~2000×
        h², and λ̂ runs tens of percent to 200 % hot (docs/benchmarks.md); with A = 0.1/h it
        is 20 h², as for SGHMC.

    Notes
    -----
    The kernel is ``SGNHT.step(posterior, key, state, batch, *, step_size, diffusion)`` (A
    resolved). The momentum starts at p₀ = 0 rather than a draw of N(0, I): ``init`` takes
    no key (initial states are deterministic functions of w*, as checkpoints and resumed
    runs assume), and the thermostat warms a cold momentum up within the burn-in (ξ falls
    below A while pᵀp/d < 1). The move is kinetic: its check is the MALA acceptance of a
    Langevin probe from :math:`w_t` with the curvature-equivalent step h²
    (:func:`~llc.samplers.langevin_equivalent_step`; one more gradient evaluation).
    """

    step_size: float
    diffusion: float | None = None
    name: ClassVar[str] = "sgnht"
    step_exponent: ClassVar[float] = 0.5  # ε_c = h²

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", _scalar_step(
            "sgnht", step_size_value(self.step_size)))
        if self.diffusion is not None:
            object.__setattr__(self, "diffusion", positive_float("diffusion", self.diffusion))

    @property
    def resolved_diffusion(self) -> float:
        """A: ``diffusion``, or 0.1 / h when it is None."""
        return SGNHT_FRICTION / self.step_size if self.diffusion is None else self.diffusion

    def kernel_arguments(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "diffusion": self.resolved_diffusion}

    def init(self, position: Array, backend: Any) -> SGNHTState:
        return SGNHTState(position=position, momentum=position * 0,
                          thermostat=_zero_scalar(backend, position) + self.resolved_diffusion)

    @staticmethod
    def step(posterior: LocalizedPosterior, key: Key, state: SGNHTState, batch: Any, *,
             step_size: Any, diffusion: Any) -> tuple[SGNHTState, SampleInfo, Check]:
        backend = posterior.backend
        h = _scalar_step("sgnht", step_size)
        noise_scale = _sqrt(backend, 2.0 * diffusion * h)
        position, momentum, thermostat = state
        xp = backend.namespace(position)
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = backend.normal(key, position)
        momentum = backend.linear_combination(
            (1.0 - h * thermostat, momentum), (-h, here.drift), (noise_scale, noise), reuse=2)
        new_position = backend.linear_combination((1.0, position), (h, momentum))
        dimension = momentum.shape[0]
        thermostat = thermostat + h * (xp.sum(momentum * momentum) / dimension - 1.0)
        return (SGNHTState(new_position, momentum, thermostat), _describe(here),
                _langevin_probe(posterior, key, h * h, here, position, batch))

    def curvature_equivalent_step(self) -> float:
        return float(self.step_size) ** 2

    def noise_equivalent_step(self, thermostat: float | None = None) -> float:
        """2h/ξ, with ξ the thermostat where known, else its floor A (an upper bound)."""
        floor = self.resolved_diffusion
        friction = floor if thermostat is None else max(thermostat, floor)
        return 2.0 * float(self.step_size) / friction

    def with_curvature_equivalent_step(self, epsilon: float) -> SGNHT:
        return dataclasses.replace(self, step_size=math.sqrt(epsilon))

    def carry_state(self, state: SGNHTState, previous: SGNHT) -> SGNHTState:
        """``state`` of a run with the ``previous`` settings, continued with these: the
        thermostat keeps its excess over the diffusion A (which the default ties to h), so a
        changed step does not leave ξ far from its new equilibrium (it moves by only ~h per
        step)."""
        shift = self.resolved_diffusion - previous.resolved_diffusion
        return state if shift == 0 else state._replace(thermostat=state.thermostat + shift)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "diffusion": self.resolved_diffusion}
