"""Samplers of the localized tempered posterior as pure ``(init, step)`` pairs.

A sampler *settings* object (e.g. :class:`SGLD`) is a frozen, validated record of its
hyper-parameters; ``settings.build(posterior)`` returns a :class:`SamplingAlgorithm`, the pure
pair ``init(position) -> state`` and ``step(key, state, batch) -> (state, info)`` in the style
of BlackJAX. Every array operation goes through the posterior's backend, so one sampler
serves NumPy, PyTorch and any other adapter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol

from ._backend import Array, Key
from ._validate import positive_float
from .posterior import LocalizedPosterior

__all__ = ["SGLD", "SGLDState", "SampleInfo", "SamplingAlgorithm", "SamplerSettings", "sgld",
           "get_sampler"]


class SampleInfo(NamedTuple):
    """What a step reports about the point where its gradient was taken (framework scalars).

    Attributes
    ----------
    loss
        Minibatch loss L_B(w_t): the draw that enters λ̂.
    distance
        ‖w_t − w*‖.
    grad_norm
        ‖∇L_B(w_t)‖.
    mala_acceptance
        MALA acceptance probability of this step's move (DESIGN §2), or ``None`` when the
        step was not asked to diagnose itself.
    """

    loss: Array
    distance: Array
    grad_norm: Array
    mala_acceptance: Array | None = None


class SamplingAlgorithm(NamedTuple):
    """A pure ``(init, step)`` pair bound to one posterior."""

    init: Any  # Callable[[Array], State]
    step: Any  # Callable[[Key, State, Batch, bool], tuple[State, SampleInfo]]


class SamplerSettings(Protocol):
    """Hyper-parameters of a sampler; ``build`` binds them to a posterior."""

    @property
    def name(self) -> str: ...

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm: ...

    def settings(self) -> dict[str, Any]: ...


class SGLDState(NamedTuple):
    """State of SGLD: the current flat position."""

    position: Array


def sgld(posterior: LocalizedPosterior, step_size: float) -> SamplingAlgorithm:
    r"""Stochastic gradient Langevin dynamics (Welling & Teh 2011; Lau et al. 2023, Alg. 1).

    .. math::

        w_{t+1} = w_t - \frac{\epsilon}{2}\Big(n\beta\, \nabla L_{B_t}(w_t)
                  + \gamma\,(w_t - w^*)\Big) + \sqrt{\epsilon}\,\xi_t,
        \qquad \xi_t \sim \mathcal N(0, I)

    Parameters
    ----------
    posterior
        The localized tempered posterior (nβ, γ, w*, loss and gradient).
    step_size
        ε > 0.

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` and ``step(key, state, batch, diagnose=False) -> (state,
        SampleInfo)``; the info describes :math:`w_t`, the point where the step's gradient
        is taken. With ``diagnose=True`` the step also reports the MALA acceptance of its
        move (one more gradient evaluation).
    """
    half_step = 0.5 * step_size
    noise_scale = math.sqrt(step_size)
    backend = posterior.backend

    def init(position: Array) -> SGLDState:
        return SGLDState(position=position)

    def step(key: Key, state: SGLDState, batch: Any, diagnose: bool = False
             ) -> tuple[SGLDState, SampleInfo]:
        position = state.position
        loss, grad, drift = posterior.potential_gradient(position, batch)
        noise = backend.normal(key, position)
        new_position = position - half_step * drift + noise_scale * noise
        xp = backend.namespace(position)
        info = SampleInfo(
            loss=loss,
            distance=posterior.distance(position),
            grad_norm=xp.linalg.vector_norm(grad),
            mala_acceptance=posterior.langevin_acceptance(
                step_size, position, loss, drift, new_position, batch) if diagnose else None,
        )
        return SGLDState(position=new_position), info

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class SGLD:
    """Settings of :func:`sgld`: ``SGLD(step_size=1e-4)``.

    Parameters
    ----------
    step_size
        ε > 0, the SGLD step size (the learning rate of the drift; the noise has variance ε).
    """

    step_size: float
    name: str = "sgld"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", positive_float("step_size", self.step_size))

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return sgld(posterior, self.step_size)

    def settings(self) -> dict[str, Any]:
        return asdict(self)


_SAMPLERS = {"sgld": SGLD}


def get_sampler(sampler: str | SamplerSettings, **settings: Any) -> SamplerSettings:
    """Sampler settings from a name plus keyword settings, or a settings object as is.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For an object without ``build``.
    """
    if isinstance(sampler, str):
        if sampler not in _SAMPLERS:
            raise ValueError(
                f"`sampler` must be one of {sorted(_SAMPLERS)} or a sampler settings object; "
                f"got {sampler!r}"
            )
        return _SAMPLERS[sampler](**settings)
    if isinstance(sampler, type) or not callable(getattr(sampler, "build", None)):
        raise TypeError(
            "`sampler` must be a name such as 'sgld' or a settings object with a "
            f"build(posterior) method (e.g. llc.samplers.SGLD(step_size=1e-4)); got {sampler!r}"
        )
    return sampler

