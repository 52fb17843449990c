"""Metropolis-adjusted Langevin: the exact reference sampler for small models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._backend import Array, Key
from ..posterior import LocalizedPosterior
from ._base import Check, Sampler, SampleInfo, _describe, _Step, _zero_scalar, step_size_value

__all__ = ["MALA", "MALAState"]


class MALAState(NamedTuple):
    """State of MALA: the current position."""

    position: Array


@dataclass(frozen=True)
class MALA(Sampler):
    r"""Metropolis-adjusted Langevin algorithm: ``MALA(step_size=1e-4)`` (use with
    ``batch_size = n``).

    .. math::

        w' &= w_t - \frac{\epsilon}{2}\nabla U(w_t) + \sqrt{\epsilon}\,\xi_t, \qquad
        \xi_t \sim \mathcal N(0, I), \\
        a_t &= \min\Big(1, \exp\big(U(w_t) - U(w') + \log q(w_t \mid w')
              - \log q(w' \mid w_t)\big)\Big), \quad
        q(w' \mid w) = \mathcal N\big(w';\,
              w - \tfrac{\epsilon}{2}\nabla U(w),\, \epsilon I\big), \\
        w_{t+1} &= w' \text{ with probability } a_t, \text{ else } w_t.

    The uniform of the accept test comes from the backend's normal generator alone:
    :math:`-\log u = (z_1^2 + z_2^2)/2 \sim \mathrm{Exp}(1)` for independent standard
    normals, and the proposal is accepted iff :math:`\log r_t + (z_1^2 + z_2^2)/2 > 0`, which
    is exactly :math:`u < a_t`. A non-finite proposal is rejected. Each step costs two
    gradient evaluations; its check is :math:`a_t`, already computed.

    Parameters
    ----------
    step_size
        ε > 0, or per-coordinate steps (as for :class:`SGLD`; the proposal's covariance is
        then diag(ε)).

    Notes
    -----
    U and ∇U are evaluated on the step's batch at both points. The chain is exactly
    invariant for the localized posterior only when that batch is the whole data: pass
    ``batch_size = n`` (array data) or a one-batch iterable. With minibatches it is a
    Metropolis test on a random potential and no longer exact.
    """

    step_size: float | np.ndarray
    name: ClassVar[str] = "mala"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))

    def init(self, position: Array, backend: Any) -> MALAState:
        return MALAState(position=position)

    @staticmethod
    def step(posterior: LocalizedPosterior, key: Key, state: MALAState, batch: Any, *,
             step_size: Any) -> tuple[MALAState, SampleInfo, Check]:
        backend = posterior.backend
        epsilon = _Step(posterior, step_size)
        position = state.position
        xp = backend.namespace(position)
        proposal_key, first_key, second_key = backend.split(key, 3)
        here = posterior.evaluate(position, batch, keep_grad=False)
        proposal = epsilon.langevin_move(position, here.drift,
                                         backend.normal(proposal_key, position))
        proposal_loss, _, proposal_drift = posterior.potential_gradient(proposal, batch)
        log_ratio = posterior.langevin_log_ratio(epsilon.size, position, here.loss, here.drift,
                                                 proposal, proposal_loss, proposal_drift)
        zero = _zero_scalar(backend, position)
        first, second = backend.normal(first_key, zero), backend.normal(second_key, zero)
        accept = log_ratio + 0.5 * (first * first + second * second) > 0.0  # NaN: reject
        new_position = xp.where(accept, proposal, position)
        return (MALAState(new_position), _describe(here),
                lambda: {"mala_acceptance": xp.exp(xp.clip(log_ratio, max=0.0))})
