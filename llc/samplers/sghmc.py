"""Stochastic gradient Hamiltonian Monte Carlo."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._backend import Array, Key
from ..posterior import LocalizedPosterior
from ._base import (Check, Sampler, SampleInfo, _describe, _langevin_probe, _Step,
                    _unit_interval, _zero_scalar, step_size_value)

__all__ = ["SGHMC", "SGHMCState"]


class SGHMCState(NamedTuple):
    """State of SGHMC: the position and the momentum (velocity per step) v."""

    position: Array
    momentum: Array


@dataclass(frozen=True)
class SGHMC(Sampler):
    r"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin 2014, eq. 15):
    ``SGHMC(step_size=1e-5, friction=0.1)``.

    In Chen et al.'s "SGD with momentum" parametrization, learning rate η (``step_size``)
    and friction α (``friction``), with the injected noise matched to the friction and no
    estimate of the gradient noise (:math:`\hat\beta = 0`):

    .. math::

        v_{t+1} &= (1 - \alpha)\, v_t - \eta\, \nabla U(w_t)
                   + \sqrt{2 \alpha \eta}\; \xi_t, \qquad \xi_t \sim \mathcal N(0, I), \\
        w_{t+1} &= w_t + v_{t+1}, \qquad v_0 = 0,

    with :math:`U = n\beta L_B + \tfrac{\gamma}{2}\lVert w - w^*\rVert^2`. It discretizes
    :math:`dw = r\,dt`, :math:`dr = -\nabla U\,dt - C r\,dt + \sqrt{2C}\,dW` with time step
    :math:`h = \sqrt\eta`, friction :math:`C = \alpha/\sqrt\eta` and :math:`v = h r`, whose
    stationary law is :math:`\propto e^{-U(w) - \lVert r\rVert^2/2}`. With α = 1 it is
    exactly SGLD with ε = 2η.

    Parameters
    ----------
    step_size
        η > 0, the learning rate (η = h²; ε = 2η is the SGLD step with the same drift), or
        per-coordinate learning rates (as for :class:`SGLD`).
    friction
        α ∈ (0, 1], the fraction of the momentum lost per step (1 − α is the momentum
        coefficient of SGD; default 0.1). Chen et al. use 0.01–0.1.

    Notes
    -----
    The kernel is ``SGHMC.step(posterior, key, state, batch, *, step_size, friction)``;
    ``init`` sets v₀ = 0 (it takes no key). The move is kinetic, not a Langevin proposal in
    w: its check is the MALA acceptance of a Langevin probe from :math:`w_t` with the
    curvature-equivalent step :math:`\epsilon_c = 2\eta/(2-\alpha)`
    (:func:`~llc.samplers.langevin_equivalent_step`; one more gradient evaluation; a
    per-coordinate η reports NaN).
    """

    step_size: float | np.ndarray
    friction: float = 0.1
    name: ClassVar[str] = "sghmc"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))
        object.__setattr__(self, "friction", _unit_interval(
            "friction", self.friction, closed_low=False, closed_high=True))

    def init(self, position: Array, backend: Any) -> SGHMCState:
        return SGHMCState(position=position, momentum=position * 0)

    @staticmethod
    def step(posterior: LocalizedPosterior, key: Key, state: SGHMCState, batch: Any, *,
             step_size: Any, friction: Any) -> tuple[SGHMCState, SampleInfo, Check]:
        backend = posterior.backend
        epsilon = _Step(posterior, step_size)
        decay = 1.0 - friction
        noise_scale = epsilon.sqrt(2.0 * friction)
        position = state.position
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = backend.normal(key, position)
        check: Check
        if epsilon.per_coordinate:
            momentum = backend.linear_combination(
                (decay, state.momentum), epsilon.scaled(-1.0, here.drift),
                (1.0, noise_scale * noise))

            def check() -> dict[str, Array]:  # no single Langevin step to probe with
                return {"mala_acceptance": _zero_scalar(backend, position) + math.nan}

        else:
            momentum = backend.linear_combination(
                (decay, state.momentum), (-epsilon.size, here.drift), (noise_scale, noise),
                reuse=2)
            probe_step = 2.0 * epsilon.size / (2.0 - friction)  # ε_c
            check = _langevin_probe(posterior, key, probe_step, here, position, batch)
        return SGHMCState(position + momentum, momentum), _describe(here), check

    def curvature_equivalent_step(self) -> float:
        return 2.0 * float(self.step_size) / (2.0 - self.friction)

    def noise_equivalent_step(self) -> float:
        return 2.0 * float(self.step_size) / self.friction

    def with_curvature_equivalent_step(self, epsilon: float) -> SGHMC:
        return dataclasses.replace(self, step_size=float(epsilon) * (2.0 - self.friction) / 2.0)
