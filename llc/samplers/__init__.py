"""Samplers of the localized tempered posterior, one class per sampler.

A sampler is a frozen dataclass of its validated hyper-parameters (e.g. :class:`SGLD`)
whose static ``step`` is its kernel in the style of BlackJAX, a pure function
``step(posterior, key, state, batch, **hyperparameters) -> (state, info, check)`` with the
hyper-parameters as keyword arguments, so that ``step_size="auto"`` changes an argument, not
a program; ``init(position, backend)`` is its initial state. ``check`` is the move's
deferred acceptance diagnostic: :func:`diagnosable` runs it only when a step is asked to
diagnose itself. ``sampler.build(posterior)`` binds both to a posterior as the pair
``init(position)``, ``step(key, state, batch, diagnose=False) -> (state, info)``
(:class:`SamplingAlgorithm`), which is what the runner drives; a user's own sampler needs
only that ``build`` (:class:`SamplerSettings`). Every array operation goes through the
posterior's backend, so one kernel serves NumPy, PyTorch and any other adapter. A state is
a ``NamedTuple`` whose first field is ``position`` (one flat vector) and whose every field
is an array of the backend (scalars such as a step counter or a thermostat are 0-d arrays),
so checkpoints can store it field by field.

Samplers, by name (``llc.estimate(..., sampler=name, step_size=...)``):

- ``"sgld"`` (:class:`SGLD`): stochastic gradient Langevin dynamics;
- ``"rmsprop_sgld"`` (:class:`RMSPropSGLD`): RMSProp-preconditioned SGLD;
- ``"sghmc"`` (:class:`SGHMC`): stochastic gradient Hamiltonian Monte Carlo with friction;
- ``"sgnht"`` (:class:`SGNHT`): stochastic gradient Nosé–Hoover thermostat;
- ``"mala"`` (:class:`MALA`): Metropolis-adjusted Langevin, the exact full-batch reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import (Check, InitFn, Kernel, Sampler, SampleInfo, SamplerSettings,
                    SamplingAlgorithm, StepFn, diagnosable, step_size_value)
from .mala import MALA, MALAState
from .rmsprop_sgld import RMSPropSGLD, RMSPropSGLDState
from .sghmc import SGHMC, SGHMCState
from .sgld import SGLD, SGLDState
from .sgnht import SGNHT, SGNHTState

__all__ = [
    "MALA",
    "SAMPLERS",
    "SGHMC",
    "SGLD",
    "SGNHT",
    "Check",
    "InitFn",
    "Kernel",
    "MALAState",
    "RMSPropSGLD",
    "RMSPropSGLDState",
    "SGHMCState",
    "SGLDState",
    "SGNHTState",
    "SampleInfo",
    "Sampler",
    "SamplerSettings",
    "SamplingAlgorithm",
    "StepFn",
    "diagnosable",
    "get_sampler",
    "langevin_equivalent_step",
    "langevin_noise_equivalent_step",
    "settings_from_attrs",
    "step_exponent",
    "step_size_value",
]

#: The built-in samplers by name.
SAMPLERS: dict[str, type[Sampler]] = {"sgld": SGLD, "rmsprop_sgld": RMSPropSGLD,
                                      "sghmc": SGHMC, "sgnht": SGNHT, "mala": MALA}


def get_sampler(sampler: str | SamplerSettings, **settings: Any) -> SamplerSettings:
    """A sampler from a name plus keyword settings, or a sampler object as is.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For an object without ``build``.
    """
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"`sampler` must be one of {sorted(SAMPLERS)} or a sampler object; "
                f"got {sampler!r}"
            )
        return SAMPLERS[sampler](**settings)
    if isinstance(sampler, type) or not callable(getattr(sampler, "build", None)):
        raise TypeError(
            f"`sampler` must be a name such as 'sgld' (one of {sorted(SAMPLERS)}) or a sampler "
            "object with a build(posterior) method (e.g. llc.samplers.SGLD(step_size=1e-4)); "
            f"got {sampler!r}"
        )
    return sampler


def langevin_equivalent_step(settings: Any) -> float | None:
    r"""The SGLD step :math:`\epsilon_c` whose curvature bias of λ̂ equals the sampler's.

    For a quadratic potential with curvature k per coordinate, the stationary excess of
    :math:`\mathbb E[U] - U^*` per coordinate is :math:`\tfrac{\epsilon}{8}k` for SGLD and
    :math:`\tfrac{\eta}{4(2-\alpha)}k` for SGHMC (to first order in ηk, from the stationary
    covariance of its linear recursion), so :math:`\epsilon_c = 2\eta/(2-\alpha)`; SGNHT is
    an SGHMC with η = h² and friction α = ξh, so :math:`\epsilon_c = 2h^2/(2 - \xi h)`, of
    which h² (ξ changes along the run) is returned, a lower bound. Minibatch-gradient noise of
    variance N per coordinate adds :math:`\tfrac{\epsilon}{8}N` for SGLD but
    :math:`\tfrac{\eta}{4\alpha}N` for SGHMC (:func:`langevin_noise_equivalent_step`).

    Parameters
    ----------
    settings
        A sampler (``llc.samplers.SGHMC(...)``, …).

    Returns
    -------
    float or None
        :math:`\epsilon_c`; None for a sampler without one (MALA is exact, RMSProp-SGLD
        preconditions per coordinate) or with per-coordinate steps.
    """
    method = getattr(settings, "curvature_equivalent_step", None)
    return None if method is None or isinstance(settings.step_size, np.ndarray) else method()


def langevin_noise_equivalent_step(settings: Any) -> float | None:
    r"""The SGLD step :math:`\epsilon_n` whose minibatch-noise bias of λ̂ equals the
    sampler's (derivation in :func:`langevin_equivalent_step`): ε for SGLD, 2η/α for SGHMC,
    2h/A for SGNHT (an upper bound: the thermostat ξ rises above A under noise); None where
    :func:`langevin_equivalent_step` is None."""
    method = getattr(settings, "noise_equivalent_step", None)
    return None if method is None or isinstance(settings.step_size, np.ndarray) else method()


def settings_from_attrs(attrs: dict[str, Any]) -> Sampler | None:
    """The sampler a result's attrs record (``sampler`` and ``sampler_*``), or None when they
    do not rebuild (an unknown sampler, per-leaf steps)."""
    name = attrs.get("sampler")
    if name not in SAMPLERS:
        return None
    fields = {key.removeprefix("sampler_"): value for key, value in attrs.items()
              if key.startswith("sampler_")}
    try:
        return SAMPLERS[name](**fields)
    except (TypeError, ValueError):
        return None


def step_exponent(settings: Any) -> float:
    """p in step ∝ ε_c^p (1, or ½ for SGNHT whose ε_c is h²)."""
    return float(getattr(settings, "step_exponent", 1.0))
