"""What every sampler shares: the step's report, the kernel and step protocols, the
diagnostic wrapper, the settings base class and the step-size helpers."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np

from .._backend import Array, Key
from .._validate import positive_float
from ..posterior import LocalizedPosterior, PotentialEvaluation

__all__ = ["Check", "InitFn", "Kernel", "Sampler", "SampleInfo", "SamplerSettings",
           "SamplingAlgorithm", "StepFn", "diagnosable", "step_size_value"]


class SampleInfo(NamedTuple):
    r"""What a step reports about the point where its gradient was taken (framework scalars).

    Attributes
    ----------
    loss
        Minibatch loss L_B(w_t): the draw that enters λ̂.
    distance
        ‖w_t − w*‖.
    grad_norm
        ‖∇L_B(w_t)‖.
    mala_acceptance
        MALA acceptance probability of this step's move (docs/design.md §2), or ``None`` when the
        step was not asked to diagnose itself. For :class:`~llc.samplers.MALA` it is the
        acceptance probability of the proposal that the step accepted or rejected; for
        :class:`~llc.samplers.RMSPropSGLD` that of the preconditioned Langevin move. The
        momentum samplers (:class:`~llc.samplers.SGHMC`, :class:`~llc.samplers.SGNHT`) make
        no Langevin move in the position alone; they report the acceptance of a Langevin
        probe from :math:`w_t` with their curvature-equivalent step
        (:func:`~llc.samplers.langevin_equivalent_step`), on an independent noise draw that
        does not move the chain.
    first_order
        nβ ∇L_n(w*)·(w_t − w*), the first-order term of the loss increase, when the
        posterior knows ∇L_n(w*) (:attr:`LocalizedPosterior.slope`); else ``None``.
    grad_power
        :math:`\sum_i (\epsilon_i/\epsilon)\,(\partial_i L_B(w_t))^2`, the squared minibatch
        gradient weighted by each coordinate's step relative to ε, reported with
        ``diagnose`` by a sampler whose steps differ per coordinate from ε
        (:class:`~llc.samplers.RMSPropSGLD`); ``None`` where it equals ``grad_norm²``.
        ``step_size="auto"`` reads it.
    """

    loss: Array
    distance: Array
    grad_norm: Array
    mala_acceptance: Array | None = None
    first_order: Array | None = None
    grad_power: Array | None = None


#: A kernel's deferred diagnostic: called (inside the same step) only when the step is asked
#: to diagnose itself, it returns the :class:`SampleInfo` fields it fills
#: (``mala_acceptance``, and ``grad_power`` where the steps differ per coordinate).
Check = Callable[[], dict[str, Array]]


class Kernel(Protocol):
    """``step(posterior, key, state, batch, **hyperparameters) -> (state, info, check)``: one
    transition of a sampler, a pure function of its arguments. The hyperparameters are
    keyword arguments (numbers, 0-d arrays of a compiled program, or flags), so that one
    compiled program serves every value of them; ``check`` is the move's deferred
    diagnostic (:data:`Check`)."""

    def __call__(self, posterior: LocalizedPosterior, key: Key, state: Any, batch: Any,
                 **hyperparameters: Any) -> tuple[Any, SampleInfo, Check]: ...


class InitFn(Protocol):
    """``init(position)``: a sampler's state at ``position`` (a NamedTuple whose first field
    is ``position``, arrays of the position's framework on its device)."""

    def __call__(self, position: Array) -> Any: ...


class StepFn(Protocol):
    """``step(key, state, batch, diagnose=False)``: one transition, a pure function of its
    arguments (the key alone carries the randomness). ``diagnose`` (static: a compiled step
    is specialized on it) asks for ``SampleInfo.mala_acceptance`` (and ``grad_power`` where
    the sampler has per-coordinate steps) at the cost of one more gradient."""

    def __call__(self, key: Key, state: Any, batch: Any, diagnose: bool = False
                 ) -> tuple[Any, SampleInfo]: ...


class SamplingAlgorithm(NamedTuple):
    """A pure ``(init, step)`` pair bound to one posterior and one set of hyperparameters."""

    init: InitFn
    step: StepFn


class SamplerSettings(Protocol):
    """What :func:`llc.estimate` needs of a sampler: a name, ``build`` binding it to a
    posterior, and a flat record of its settings for the result's attrs. The built-in
    samplers (:class:`Sampler` subclasses) satisfy it; a user's own sampler may too."""

    @property
    def name(self) -> str: ...

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm: ...

    def settings(self) -> dict[str, Any]: ...


def diagnosable(kernel: Kernel, posterior: LocalizedPosterior, hyperparameters: dict[str, Any]
                ) -> StepFn:
    """The :class:`StepFn` of ``kernel`` with ``posterior`` and ``hyperparameters`` bound:
    with ``diagnose=True`` it runs the kernel's deferred check and adds its fields to the
    info; otherwise the check is never called (nor its gradient computed)."""

    def step(key: Key, state: Any, batch: Any, diagnose: bool = False
             ) -> tuple[Any, SampleInfo]:
        new_state, info, check = kernel(posterior, key, state, batch, **hyperparameters)
        return new_state, (info._replace(**check()) if diagnose else info)

    return step


class Sampler:
    """Base of the built-in samplers: one frozen dataclass per sampler whose fields are its
    validated hyperparameters, whose static ``step`` is its pure :class:`Kernel`, and whose
    ``init(position, backend)`` is its initial state.

    Subclasses set ``name`` and define ``step``, ``init`` and, where the kernel's keyword
    arguments are not exactly the fields, :meth:`kernel_arguments`.
    """

    name: ClassVar[str]
    #: The kernel (a :class:`Kernel`), a static method of each sampler.
    step: ClassVar[Callable[..., tuple[Any, SampleInfo, Check]]]

    def init(self, position: Array, backend: Any) -> Any:
        """The state at ``position`` (the first field; the rest as the sampler starts)."""
        raise NotImplementedError

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`step` after ``(posterior, key, state, batch)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        """The ``(init, step)`` pair on ``posterior`` with these hyperparameters."""
        backend = posterior.backend
        arguments = self.kernel_arguments()
        if isinstance(arguments.get("step_size"), np.ndarray):  # checked and converted once
            arguments["step_size"] = _Step(posterior, arguments["step_size"]).size

        def init(position: Array) -> Any:
            return self.init(position, backend)

        return SamplingAlgorithm(init, diagnosable(type(self).step, posterior, arguments))

    def settings(self) -> dict[str, Any]:
        """The settings as a flat record for a result's attrs: a per-coordinate step appears
        as its largest value (the result records the per-leaf steps separately)."""
        record = dataclasses.asdict(self)  # type: ignore[call-overload]
        if isinstance(record.get("step_size"), np.ndarray):
            record["step_size"] = float(record["step_size"].max())
        return {"name": self.name, **record}


# ---- helpers shared by the kernels ----------------------------------------------------------

def step_size_value(value: Any, name: str = "step_size") -> float | np.ndarray:
    """A sampler's step size checked: a finite number > 0, or a 1-D array-like of finite
    per-coordinate steps > 0 (returned as a read-only float64 NumPy copy; its length must
    equal the number of parameters, which ``build`` checks)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return positive_float(name, value)
    expected = (f"`{name}` must be a positive number or a 1-D array of per-coordinate steps; "
                f"got {type(value).__name__}")
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") \
            and not hasattr(value, "shape"):
        raise TypeError(expected)
    try:
        steps = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(expected) from None
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError(f"`{name}` as an array must be 1-D and non-empty (one step per "
                         f"coordinate of the flat parameters); got shape {steps.shape}")
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise ValueError(f"`{name}` must hold finite steps > 0; got min {steps.min()!r}")
    steps.flags.writeable = False
    return steps


class _Step:
    """A step size bound to a posterior: ``size`` is ε (a float) or the per-coordinate steps
    as an array of the posterior's backend, and the Langevin move applies it either way."""

    def __init__(self, posterior: LocalizedPosterior, step_size: Any) -> None:
        self.backend = posterior.backend
        self.per_coordinate = len(getattr(step_size, "shape", ())) == 1
        if self.per_coordinate:
            dimension = int(posterior.center.shape[0])
            if tuple(step_size.shape) != (dimension,):
                raise ValueError(f"`step_size` has {step_size.shape[0]} per-coordinate steps; "
                                 f"the parameters have {dimension} coordinates")
            self.size = self.backend.asarray(step_size, like=posterior.center)
        else:  # a number, or a 0-d array of a compiled program's arguments
            self.size = step_size

    def sqrt(self, factor: float = 1.0) -> Any:
        """√(factor · ε), per coordinate where ε is."""
        if self.per_coordinate:
            return self.backend.namespace(self.size).sqrt(factor * self.size)
        return _sqrt(self.backend, factor * self.size)

    def scaled(self, coefficient: float, vector: Array) -> tuple[Any, Array]:
        """The term ``coefficient · ε ⊙ vector`` for :meth:`Backend.linear_combination`."""
        if self.per_coordinate:
            return (coefficient, self.size * vector)
        return (coefficient * self.size, vector)

    def langevin_move(self, position: Array, drift: Array, noise: Array) -> Array:
        """w − (ε/2) ⊙ ∇U + √ε ⊙ ξ (``noise`` is a temporary the result may overwrite)."""
        if self.per_coordinate:
            return self.backend.linear_combination(
                (1.0, position), self.scaled(-0.5, drift), (1.0, self.sqrt() * noise))
        return self.backend.linear_combination(
            (1.0, position), (-0.5 * self.size, drift), (self.sqrt(), noise), reuse=2)


def _scalar_step(sampler_name: str, step_size: Any) -> Any:
    if len(getattr(step_size, "shape", ())) == 1:
        raise ValueError(f"the {sampler_name} sampler takes one step size for every "
                         "coordinate: per-coordinate (per-leaf) steps would break its "
                         "thermostat, which holds the mean kinetic energy; use sgld, "
                         "rmsprop_sgld, sghmc or mala")
    return float(step_size) if isinstance(step_size, numbers.Real) else step_size


def _sqrt(backend: Any, value: Any) -> Any:
    """√value of a number (``math.sqrt``) or of a 0-d array of a compiled program."""
    if isinstance(value, numbers.Real):
        return math.sqrt(value)
    return backend.namespace(value).sqrt(value)


def _langevin_check(posterior: LocalizedPosterior, step_size: Any, here: PotentialEvaluation,
                    position: Array, proposal: Array, batch: Any) -> Check:
    """The check of a Langevin move ``position → proposal`` with ``step_size``."""
    return lambda: {"mala_acceptance": posterior.langevin_acceptance(
        step_size, position, here.loss, here.drift, proposal, batch)}


def _langevin_probe(posterior: LocalizedPosterior, key: Key, step_size: Any,
                    here: PotentialEvaluation, position: Array, batch: Any) -> Check:
    """The check of a momentum sampler: the MALA acceptance of a Langevin move from
    ``position`` with ``step_size`` on a noise draw of its own (``fold_in(key, 1)``)."""
    backend = posterior.backend

    def check() -> dict[str, Array]:
        noise = backend.normal(backend.fold_in(key, 1), position)
        proposal = backend.linear_combination(
            (1.0, position), (-0.5 * step_size, here.drift), (_sqrt(backend, step_size), noise),
            reuse=2)
        return {"mala_acceptance": posterior.langevin_acceptance(
            step_size, position, here.loss, here.drift, proposal, batch)}

    return check


def _zero_scalar(backend: Any, position: Array) -> Array:
    """A 0-d array of the backend with ``position``'s dtype and device (a state scalar)."""
    return backend.namespace(position).sum(position * 0)


def _describe(here: PotentialEvaluation) -> SampleInfo:
    return SampleInfo(loss=here.loss, distance=here.distance, grad_norm=here.grad_norm,
                      first_order=here.first_order)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {type(value).__name__}")
    return value


def _unit_interval(name: str, value: Any, *, closed_low: bool, closed_high: bool) -> float:
    number = positive_float(name, value, allow_zero=True)
    low_ok = number >= 0 if closed_low else number > 0
    high_ok = number <= 1 if closed_high else number < 1
    if not (low_ok and high_ok):
        interval = ("[" if closed_low else "(") + "0, 1" + ("]" if closed_high else ")")
        raise ValueError(f"`{name}` must lie in {interval}; got {value!r}")
    return number
