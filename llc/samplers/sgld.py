"""Stochastic gradient Langevin dynamics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._backend import Array, Key
from ..posterior import LocalizedPosterior
from ._base import Check, Sampler, SampleInfo, _describe, _langevin_check, _Step, step_size_value

__all__ = ["SGLD", "SGLDState"]


class SGLDState(NamedTuple):
    """State of SGLD: the current flat position."""

    position: Array


@dataclass(frozen=True)
class SGLD(Sampler):
    r"""Stochastic gradient Langevin dynamics (Welling & Teh 2011; Lau et al. 2023, Alg. 1):
    ``SGLD(step_size=1e-4)``.

    .. math::

        w_{t+1} = w_t - \frac{\epsilon}{2}\Big(n\beta\, \nabla L_{B_t}(w_t)
                  + \gamma\,(w_t - w^*)\Big) + \sqrt{\epsilon}\,\xi_t,
        \qquad \xi_t \sim \mathcal N(0, I)

    Parameters
    ----------
    step_size
        ε > 0 (the learning rate of the drift; the noise has variance ε), or a 1-D array of
        per-coordinate steps :math:`\epsilon_i > 0` (one per coordinate of the flat
        position; :func:`llc.estimate` builds it from a per-leaf ``step_size``), which
        replaces ε by :math:`\epsilon_i` coordinate by coordinate.

    Notes
    -----
    The kernel, ``SGLD.step(posterior, key, state, batch, *, step_size)``, returns the new
    state, the :class:`SampleInfo` of :math:`w_t` (the point where the gradient is taken)
    and the deferred check of its move: the MALA acceptance of the Langevin proposal it
    made (one more gradient evaluation, only when diagnosing).
    """

    step_size: float | np.ndarray
    name: ClassVar[str] = "sgld"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))

    def init(self, position: Array, backend: Any) -> SGLDState:
        return SGLDState(position=position)

    @staticmethod
    def step(posterior: LocalizedPosterior, key: Key, state: SGLDState, batch: Any, *,
             step_size: Any) -> tuple[SGLDState, SampleInfo, Check]:
        epsilon = _Step(posterior, step_size)
        position = state.position
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = posterior.backend.normal(key, position)
        new_position = epsilon.langevin_move(position, here.drift, noise)
        return (SGLDState(position=new_position), _describe(here),
                _langevin_check(posterior, epsilon.size, here, position, new_position, batch))

    def curvature_equivalent_step(self) -> float:
        return float(self.step_size)

    noise_equivalent_step = curvature_equivalent_step

    def with_curvature_equivalent_step(self, epsilon: float) -> SGLD:
        return dataclasses.replace(self, step_size=float(epsilon))
