"""Samplers of the localized tempered posterior as pure ``(init, step)`` pairs.

A sampler *settings* object (e.g. :class:`SGLD`) is a frozen, validated record of its
hyper-parameters; ``settings.build(posterior)`` returns a :class:`SamplingAlgorithm`, the pure
pair ``init(position) -> state`` and ``step(key, state, batch) -> (state, info)`` in the style
of BlackJAX. Every array operation goes through the posterior's backend, so one sampler
serves NumPy, PyTorch and any other adapter. A state is a ``NamedTuple`` whose first field is
``position`` (one flat vector) and whose every field is an array of the backend (scalars such
as a step counter or a thermostat are 0-d arrays), so checkpoints can store it field by field.

Samplers, by name (``llc.estimate(..., sampler=name, step_size=...)``):

- ``"sgld"`` (:class:`SGLD`): stochastic gradient Langevin dynamics;
- ``"rmsprop_sgld"`` (:class:`RMSPropSGLD`): RMSProp-preconditioned SGLD;
- ``"sghmc"`` (:class:`SGHMC`): stochastic gradient Hamiltonian Monte Carlo with friction;
- ``"sgnht"`` (:class:`SGNHT`): stochastic gradient Nosé–Hoover thermostat;
- ``"mala"`` (:class:`MALA`): Metropolis-adjusted Langevin, the exact full-batch reference.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from ._backend import Array, Key
from ._validate import positive_float
from .posterior import LocalizedPosterior, PotentialEvaluation

__all__ = [
    "MALA",
    "SGHMC",
    "SGLD",
    "SGNHT",
    "MALAState",
    "RMSPropSGLD",
    "RMSPropSGLDState",
    "SGHMCState",
    "SGLDState",
    "SGNHTState",
    "SampleInfo",
    "SamplerSettings",
    "SamplingAlgorithm",
    "get_sampler",
    "langevin_equivalent_step",
    "langevin_noise_equivalent_step",
    "mala",
    "rmsprop_sgld",
    "sghmc",
    "sgld",
    "settings_from_attrs",
    "sgnht",
    "step_exponent",
    "step_size_value",
]


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
        step was not asked to diagnose itself. For :func:`mala` it is the acceptance
        probability of the proposal that the step accepted or rejected; for
        :func:`rmsprop_sgld` that of the preconditioned Langevin move. The momentum samplers
        (:func:`sghmc`, :func:`sgnht`) make no Langevin move in the position alone; they
        report the acceptance of a Langevin probe from :math:`w_t` with their
        curvature-equivalent step (:func:`langevin_equivalent_step`), on an independent noise
        draw that does not move the chain.
    first_order
        nβ ∇L_n(w*)·(w_t − w*), the first-order term of the loss increase, when the
        posterior knows ∇L_n(w*) (:attr:`LocalizedPosterior.slope`); else ``None``.
    grad_power
        :math:`\sum_i (\epsilon_i/\epsilon)\,(\partial_i L_B(w_t))^2`, the squared minibatch
        gradient weighted by each coordinate's step relative to ε, reported with
        ``diagnose`` by a sampler whose steps differ per coordinate from ε
        (:func:`rmsprop_sgld`); ``None`` where it equals ``grad_norm²``. ``step_size="auto"``
        reads it (:mod:`llc._adapt`).
    """

    loss: Array
    distance: Array
    grad_norm: Array
    mala_acceptance: Array | None = None
    first_order: Array | None = None
    grad_power: Array | None = None


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
    """A pure ``(init, step)`` pair bound to one posterior."""

    init: InitFn
    step: StepFn


class SamplerSettings(Protocol):
    """Hyper-parameters of a sampler; ``build`` binds them to a posterior."""

    @property
    def name(self) -> str: ...

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm: ...

    def settings(self) -> dict[str, Any]: ...


class SGLDState(NamedTuple):
    """State of SGLD: the current flat position."""

    position: Array


def sgld(posterior: LocalizedPosterior, step_size: float | np.ndarray) -> SamplingAlgorithm:
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
        ε > 0, or a NumPy array of per-coordinate steps :math:`\epsilon_i > 0` (one per
        coordinate of the flat position; :func:`llc.estimate` builds it from a per-leaf
        ``step_size``), which replaces ε by :math:`\epsilon_i` coordinate by coordinate.

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` and ``step(key, state, batch, diagnose=False) -> (state,
        SampleInfo)``; the info describes :math:`w_t`, the point where the step's gradient
        is taken. With ``diagnose=True`` the step also reports the MALA acceptance of its
        move (one more gradient evaluation).
    """
    epsilon = _Step(posterior, step_size)
    backend = posterior.backend

    def init(position: Array) -> SGLDState:
        return SGLDState(position=position)

    def step(key: Key, state: SGLDState, batch: Any, diagnose: bool = False
             ) -> tuple[SGLDState, SampleInfo]:
        position = state.position
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = backend.normal(key, position)
        new_position = epsilon.langevin_move(position, here.drift, noise)
        acceptance = posterior.langevin_acceptance(
            epsilon.size, position, here.loss, here.drift, new_position, batch
        ) if diagnose else None
        return SGLDState(position=new_position), _describe(here, acceptance)

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class SGLD:
    """Settings of :func:`sgld`: ``SGLD(step_size=1e-4)``.

    Parameters
    ----------
    step_size
        ε > 0, the SGLD step size (the learning rate of the drift; the noise has variance ε),
        or a 1-D array of per-coordinate steps (see :func:`step_size_value`).
    """

    step_size: float | np.ndarray
    name: str = "sgld"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))

    kernel = staticmethod(sgld)

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`kernel` after the posterior."""
        return {"step_size": self.step_size}

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return sgld(posterior, **self.kernel_arguments())

    def curvature_equivalent_step(self) -> float:
        return float(self.step_size)

    noise_equivalent_step = curvature_equivalent_step

    def with_curvature_equivalent_step(self, epsilon: float) -> SGLD:
        return dataclasses.replace(self, step_size=float(epsilon))

    def settings(self) -> dict[str, Any]:
        return _record(self)


# ---- helpers shared by the samplers -------------------------------------------------------

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


def _record(settings: Any) -> dict[str, Any]:
    """The settings as a flat record for a result's attrs: a per-coordinate step appears as
    its largest value (the result records the per-leaf steps separately)."""
    record = asdict(settings)
    if isinstance(record.get("step_size"), np.ndarray):
        record["step_size"] = float(record["step_size"].max())
    return record


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


def _scalar_step(settings_name: str, step_size: Any) -> Any:
    if len(getattr(step_size, "shape", ())) == 1:
        raise ValueError(f"the {settings_name} sampler takes one step size for every "
                         "coordinate: per-coordinate (per-leaf) steps would break its "
                         "thermostat, which holds the mean kinetic energy; use sgld, "
                         "rmsprop_sgld, sghmc or mala")
    return float(step_size) if isinstance(step_size, numbers.Real) else step_size


def _sqrt(backend: Any, value: Any) -> Any:
    """√value of a number (``math.sqrt``) or of a 0-d array of a compiled program."""
    if isinstance(value, numbers.Real):
        return math.sqrt(value)
    return backend.namespace(value).sqrt(value)


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
        Sampler settings (``llc.samplers.SGHMC(...)``, …).

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


def settings_from_attrs(attrs: dict[str, Any]) -> Any | None:
    """The sampler settings a result's attrs record (``sampler`` and ``sampler_*``), or None
    when they do not rebuild (an unknown sampler, per-leaf steps)."""
    name = attrs.get("sampler")
    if name not in _SAMPLERS:
        return None
    fields = {key.removeprefix("sampler_"): value for key, value in attrs.items()
              if key.startswith("sampler_")}
    try:
        return _SAMPLERS[name](**fields)
    except (TypeError, ValueError):
        return None


def step_exponent(settings: Any) -> float:
    """p in step ∝ ε_c^p (1, or ½ for SGNHT whose ε_c is h²)."""
    return float(getattr(settings, "step_exponent", 1.0))


def _langevin_probe(posterior: LocalizedPosterior, key: Key, step_size: float,
                    here: PotentialEvaluation, position: Array, batch: Any) -> Array:
    """MALA acceptance of a Langevin move from ``position`` with ``step_size``, on a noise
    draw of its own (``fold_in(key, 1)``): the momentum samplers' acceptance diagnostic."""
    backend = posterior.backend
    noise = backend.normal(backend.fold_in(key, 1), position)
    proposal = backend.linear_combination(
        (1.0, position), (-0.5 * step_size, here.drift), (_sqrt(backend, step_size), noise),
        reuse=2)
    return posterior.langevin_acceptance(step_size, position, here.loss, here.drift, proposal,
                                         batch)


def _zero_scalar(backend: Any, position: Array) -> Array:
    """A 0-d array of the backend with ``position``'s dtype and device (a state scalar)."""
    return backend.namespace(position).sum(position * 0)


def _describe(here: PotentialEvaluation, acceptance: Array | None) -> SampleInfo:
    return SampleInfo(loss=here.loss, distance=here.distance, grad_norm=here.grad_norm,
                      mala_acceptance=acceptance, first_order=here.first_order)


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


# ---- RMSProp-preconditioned SGLD ----------------------------------------------------------

def rmsprop_denominator(xp: Any, square_avg: Array, count: Array, beta2: float,
                        eps_stability: float, bias_correction: bool) -> Array:
    r""":math:`\sqrt{\hat v_t} + a`, the per-coordinate divisor of RMSProp-SGLD's step
    (:math:`\hat v_t = v_t / (1 - \beta_2^t)` with ``bias_correction``, else :math:`v_t`)."""
    corrected = square_avg / (1.0 - beta2 ** count) if bias_correction else square_avg
    return xp.sqrt(corrected) + eps_stability


#: Default stabiliser ``a`` of :func:`rmsprop_sgld` (see its docstring for the choice).
RMSPROP_EPS_STABILITY = 0.1


class RMSPropSGLDState(NamedTuple):
    """State of RMSProp-SGLD: the position, the running mean v of g², the step count t."""

    position: Array
    square_avg: Array
    count: Array  # 0-d: number of updates of square_avg so far


def rmsprop_sgld(posterior: LocalizedPosterior, step_size: float | np.ndarray, beta2: float = 0.99,
                 eps_stability: float = RMSPROP_EPS_STABILITY, bias_correction: bool = True,
                 initial_square_avg: float = 1.0) -> SamplingAlgorithm:
    r"""RMSProp-preconditioned SGLD (Li et al. 2016; Hitchcock & Hoogland 2025; docs/design.md §2).

    With :math:`g_t = \nabla L_{B_t}(w_t)` the gradient of the mean minibatch loss (the
    localization term does not enter the statistics) and all operations per coordinate:

    .. math::

        v_0 &= 1, \qquad v_t = b_2\, v_{t-1} + (1 - b_2)\, g_t^2, \qquad
        \hat v_t = \frac{v_t}{1 - b_2^{\,t}}, \qquad
        \epsilon_t = \frac{\epsilon}{\sqrt{\hat v_t} + a}, \\
        w_{t+1} &= w_t - \frac{\epsilon_t}{2}\Big(\gamma\,(w_t - w^*)
                   + n\beta\, g_t\Big) + \sqrt{\epsilon_t}\,\xi_t,
        \qquad \xi_t \sim \mathcal N(0, I).

    Without bias correction :math:`\hat v_t = v_t`. devinterp's variant
    (``RMSPropSGLD(..., devinterp_variant=True)``) is :math:`v_0 = 0`, :math:`a = 0.1`,
    :math:`b_2 = 0.99` and no bias correction.

    Parameters
    ----------
    posterior
        The localized tempered posterior.
    step_size
        ε > 0, the base step size, or per-coordinate base steps (a NumPy array, as for
        :func:`sgld`).
    beta2
        b₂ ∈ [0, 1), the decay of the running mean of g².
    eps_stability
        a > 0, added to :math:`\sqrt{\hat v_t}`. It bounds the per-coordinate step by
        ε / a, which matters where the loss gradient vanishes (a flat direction, a dead
        unit): there only the localization acts, and a step ε / a ≥ 4 / γ would diverge.
        The default a = 0.1 (devinterp's value, so the two variants differ only in v₀ and
        the bias correction) caps the amplification over plain SGLD at 10×, so an ε that
        is stable for SGLD stays stable here whenever 10 εγ < 4; the preconditioning still
        acts on every coordinate whose RMS gradient of the mean loss exceeds about 0.1
        (typical magnitudes near a minimum are 10⁻²–1). A value like RMSProp's 10⁻⁸ would let
        ε_t grow by 10⁸ on a zero-gradient coordinate.
    bias_correction
        Divide v_t by 1 − b₂ᵗ. With v₀ = 1 (docs/design.md §2) this makes the first steps small
        (:math:`\hat v_1 = b_2/(1-b_2) + g_1^2 \approx 99`): the chain starts cautiously and
        reaches its full step after a few hundred steps, when :math:`b_2^t/(1-b_2^t)` has
        decayed.
    initial_square_avg
        v₀ ≥ 0: 1 in docs/design.md §2, 0 in devinterp's variant.

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` and ``step(key, state, batch, diagnose=False)``; the info
        describes :math:`w_t`. With ``diagnose=True`` it reports the MALA acceptance of the
        preconditioned Langevin move, the proposal
        :math:`\mathcal N(w - \tfrac{\epsilon_t}{2}\odot\nabla U(w), \operatorname{diag}
        \epsilon_t)` with :math:`\epsilon_t` held fixed in both directions (one more gradient
        evaluation).

    Notes
    -----
    Like Li et al. we drop the correction term Γ(w) of a position-dependent preconditioner:
    the sampler is exact in the limit of a preconditioner that is constant over the
    posterior. Where v̂ follows the position instead (a full-batch gradient that vanishes at
    the mode, while the chain moves slowly compared with the 1/(1 − b₂) = 100-step memory of
    v), the chain samples about :math:`e^{-U(w)}(\sqrt{\hat v(w)} + a)`, whose variances
    are too large (docs/benchmarks.md, "Samplers at a matched number of gradient
    evaluations"). Near w* in λ̂ estimation the minibatch noise dominates g and v̂ is nearly
    constant (the regime tests/test_samplers.py checks against exact moments).
    """
    backend = posterior.backend
    step_size = _Step(posterior, step_size).size

    def init(position: Array) -> RMSPropSGLDState:
        zero = _zero_scalar(backend, position)
        return RMSPropSGLDState(position=position, square_avg=position * 0 + initial_square_avg,
                                count=zero)

    def step(key: Key, state: RMSPropSGLDState, batch: Any, diagnose: bool = False
             ) -> tuple[RMSPropSGLDState, SampleInfo]:
        position = state.position
        xp = backend.namespace(position)
        here = posterior.evaluate(position, batch)
        loss, grad, drift = here.loss, here.grad, here.drift
        assert grad is not None  # evaluate keeps the gradient by default
        count = state.count + 1
        square_avg = backend.linear_combination((beta2, state.square_avg),
                                                (1.0 - beta2, grad * grad))
        denominator = rmsprop_denominator(xp, square_avg, count, beta2, eps_stability,
                                          bias_correction)
        local_step = step_size / denominator
        noise = backend.normal(key, position)
        new_position = position - (0.5 * local_step) * drift + xp.sqrt(local_step) * noise
        info = _describe(here, None)
        if diagnose:
            proposal_loss, _, proposal_drift = posterior.potential_gradient(new_position, batch)
            log_ratio = posterior.langevin_log_ratio(local_step, position, loss, drift,
                                                     new_position, proposal_loss, proposal_drift)
            info = info._replace(mala_acceptance=xp.exp(xp.clip(log_ratio, max=0.0)),
                                 grad_power=xp.sum(grad * grad / denominator))
        return RMSPropSGLDState(new_position, square_avg, count), info

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class RMSPropSGLD:
    """Settings of :func:`rmsprop_sgld`: ``RMSPropSGLD(step_size=1e-4)``.

    Parameters
    ----------
    step_size
        ε > 0, the base step size.
    beta2
        b₂ ∈ [0, 1), default 0.99.
    eps_stability
        a > 0, default 0.1 (see :func:`rmsprop_sgld` for the choice).
    bias_correction
        Divide v_t by 1 − b₂ᵗ (default True).
    devinterp_variant
        devinterp's variant: v₀ = 0, a = 0.1, b₂ = 0.99, no bias correction. Settings left
        at ``None`` take those values; a conflicting explicit setting is an error.

    Notes
    -----
    Settings left at ``None`` resolve to the defaults of the chosen variant, and the frozen
    object holds the resolved values.
    """

    step_size: float | np.ndarray
    beta2: float | None = None
    eps_stability: float | None = None
    bias_correction: bool | None = None
    devinterp_variant: bool = False
    name: str = field(default="rmsprop_sgld", init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "step_size", step_size_value(self.step_size))
        devinterp = _flag("devinterp_variant", self.devinterp_variant)
        defaults = ({"beta2": 0.99, "eps_stability": 0.1, "bias_correction": False} if devinterp
                    else {"beta2": 0.99, "eps_stability": RMSPROP_EPS_STABILITY,
                          "bias_correction": True})
        for name, default in defaults.items():
            value = getattr(self, name)
            if value is None:
                set_(self, name, default)
            elif devinterp and value != default:
                raise ValueError(f"`{name}`={value!r} conflicts with devinterp_variant=True, "
                                 f"which uses {name}={default!r}; leave `{name}` unset")
        set_(self, "beta2", _unit_interval("beta2", self.beta2, closed_low=True,
                                           closed_high=False))
        set_(self, "eps_stability", positive_float("eps_stability", self.eps_stability))
        set_(self, "bias_correction", _flag("bias_correction", self.bias_correction))

    @property
    def initial_square_avg(self) -> float:
        """v₀: 0 in devinterp's variant, else 1."""
        return 0.0 if self.devinterp_variant else 1.0

    kernel = staticmethod(rmsprop_sgld)

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`kernel` after the posterior."""
        assert self.beta2 is not None and self.eps_stability is not None  # resolved
        return {"step_size": self.step_size, "beta2": self.beta2,
                "eps_stability": self.eps_stability,
                "bias_correction": bool(self.bias_correction),
                "initial_square_avg": self.initial_square_avg}

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return rmsprop_sgld(posterior, **self.kernel_arguments())

    def settings(self) -> dict[str, Any]:
        return _record(self)


# ---- SGHMC ----------------------------------------------------------------------------------

class SGHMCState(NamedTuple):
    """State of SGHMC: the position and the momentum (velocity per step) v."""

    position: Array
    momentum: Array


def sghmc(posterior: LocalizedPosterior, step_size: float | np.ndarray, friction: float = 0.1
          ) -> SamplingAlgorithm:
    r"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin 2014, eq. 15).

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
    posterior
        The localized tempered posterior.
    step_size
        η > 0, the learning rate (η = h²; ε = 2η is the SGLD step with the same drift), or
        per-coordinate learning rates (a NumPy array, as for :func:`sgld`).
    friction
        α ∈ (0, 1], the fraction of the momentum lost per step (1 − α is the momentum
        coefficient of SGD). Chen et al. use 0.01–0.1.

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` (v₀ = 0: ``init`` takes no key) and ``step(key, state, batch,
        diagnose=False)``; the info describes :math:`w_t`, where the gradient is taken. The
        move is kinetic, not a Langevin proposal in w: when diagnosing, ``mala_acceptance``
        is that of a Langevin probe from :math:`w_t` with the curvature-equivalent step
        :math:`\epsilon_c = 2\eta/(2-\alpha)` (:func:`langevin_equivalent_step`; one more
        gradient evaluation; a per-coordinate η reports NaN).
    """
    backend = posterior.backend
    epsilon = _Step(posterior, step_size)
    decay = 1.0 - friction
    noise_scale = epsilon.sqrt(2.0 * friction)
    probe_step = None if epsilon.per_coordinate else 2.0 * epsilon.size / (2.0 - friction)

    def init(position: Array) -> SGHMCState:
        return SGHMCState(position=position, momentum=position * 0)

    def step(key: Key, state: SGHMCState, batch: Any, diagnose: bool = False
             ) -> tuple[SGHMCState, SampleInfo]:
        position = state.position
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = backend.normal(key, position)
        if epsilon.per_coordinate:
            momentum = backend.linear_combination(
                (decay, state.momentum), epsilon.scaled(-1.0, here.drift),
                (1.0, noise_scale * noise))
        else:
            momentum = backend.linear_combination(
                (decay, state.momentum), (-epsilon.size, here.drift), (noise_scale, noise), reuse=2)
        acceptance = None
        if diagnose:
            acceptance = (_zero_scalar(backend, position) + math.nan if probe_step is None
                          else _langevin_probe(posterior, key, probe_step, here, position, batch))
        return SGHMCState(position + momentum, momentum), _describe(here, acceptance)

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class SGHMC:
    """Settings of :func:`sghmc`: ``SGHMC(step_size=1e-5, friction=0.1)``.

    Parameters
    ----------
    step_size
        η > 0, the learning rate (α = 1 is SGLD with ε = 2η).
    friction
        α ∈ (0, 1], default 0.1.
    """

    step_size: float | np.ndarray
    friction: float = 0.1
    name: str = field(default="sghmc", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))
        object.__setattr__(self, "friction", _unit_interval(
            "friction", self.friction, closed_low=False, closed_high=True))

    kernel = staticmethod(sghmc)

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`kernel` after the posterior."""
        return {"step_size": self.step_size, "friction": self.friction}

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return sghmc(posterior, **self.kernel_arguments())

    def curvature_equivalent_step(self) -> float:
        return 2.0 * float(self.step_size) / (2.0 - self.friction)

    def noise_equivalent_step(self) -> float:
        return 2.0 * float(self.step_size) / self.friction

    def with_curvature_equivalent_step(self, epsilon: float) -> SGHMC:
        return dataclasses.replace(self, step_size=float(epsilon) * (2.0 - self.friction) / 2.0)

    def settings(self) -> dict[str, Any]:
        return _record(self)


# ---- SGNHT ----------------------------------------------------------------------------------

class SGNHTState(NamedTuple):
    """State of SGNHT: the position, the momentum p and the thermostat ξ (0-d)."""

    position: Array
    momentum: Array
    thermostat: Array


#: SGNHT's default friction per step A·h (``diffusion=None``): SGHMC's default α.
SGNHT_FRICTION = 0.1


def sgnht(posterior: LocalizedPosterior, step_size: float, diffusion: float | None = None
          ) -> SamplingAlgorithm:
    r"""Stochastic gradient Nosé–Hoover thermostat (Ding et al. 2014; docs/design.md §2).

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
    posterior
        The localized tempered posterior.
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

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` and ``step(key, state, batch, diagnose=False)``; the info
        describes :math:`w_t`. The momentum starts at p₀ = 0 rather than a draw of
        N(0, I): ``init`` takes no key (initial states are deterministic functions of w*,
        as checkpoints and resumed runs assume), and the thermostat warms a cold momentum up
        within the burn-in (ξ falls below A while pᵀp/d < 1). The move is kinetic: when
        diagnosing, ``mala_acceptance`` is that of a Langevin probe from :math:`w_t` with
        the curvature-equivalent step h² (:func:`langevin_equivalent_step`; one more
        gradient evaluation).
    """
    backend = posterior.backend
    h = _scalar_step("sgnht", step_size)
    diffusion = SGNHT_FRICTION / h if diffusion is None else diffusion
    noise_scale = _sqrt(backend, 2.0 * diffusion * h)

    def init(position: Array) -> SGNHTState:
        return SGNHTState(position=position, momentum=position * 0,
                          thermostat=_zero_scalar(backend, position) + diffusion)

    def step(key: Key, state: SGNHTState, batch: Any, diagnose: bool = False
             ) -> tuple[SGNHTState, SampleInfo]:
        position, momentum, thermostat = state
        xp = backend.namespace(position)
        here = posterior.evaluate(position, batch, keep_grad=False)
        noise = backend.normal(key, position)
        momentum = backend.linear_combination(
            (1.0 - h * thermostat, momentum), (-h, here.drift), (noise_scale, noise), reuse=2)
        new_position = backend.linear_combination((1.0, position), (h, momentum))
        dimension = momentum.shape[0]
        thermostat = thermostat + h * (xp.sum(momentum * momentum) / dimension - 1.0)
        acceptance = (_langevin_probe(posterior, key, h * h, here, position, batch)
                      if diagnose else None)
        return SGNHTState(new_position, momentum, thermostat), _describe(here, acceptance)

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class SGNHT:
    """Settings of :func:`sgnht`: ``SGNHT(step_size=1e-3)``.

    Parameters
    ----------
    step_size
        h > 0.
    diffusion
        A > 0, or None (default): A = 0.1 / h (see :func:`sgnht` for why).
    """

    step_size: float
    diffusion: float | None = None
    name: str = field(default="sgnht", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", _scalar_step(
            "sgnht", step_size_value(self.step_size)))
        if self.diffusion is not None:
            object.__setattr__(self, "diffusion", positive_float("diffusion", self.diffusion))

    @property
    def resolved_diffusion(self) -> float:
        """A: ``diffusion``, or 0.1 / h when it is None."""
        return SGNHT_FRICTION / self.step_size if self.diffusion is None else self.diffusion

    step_exponent = 0.5  # ε_c = h²

    kernel = staticmethod(sgnht)

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`kernel` after the posterior (A resolved)."""
        return {"step_size": self.step_size, "diffusion": self.resolved_diffusion}

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return sgnht(posterior, **self.kernel_arguments())

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
        return {**_record(self), "diffusion": self.resolved_diffusion}


# ---- MALA -----------------------------------------------------------------------------------

class MALAState(NamedTuple):
    """State of MALA: the current position."""

    position: Array


def mala(posterior: LocalizedPosterior, step_size: float | np.ndarray) -> SamplingAlgorithm:
    r"""Metropolis-adjusted Langevin algorithm: the exact reference sampler for small models.

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
    is exactly :math:`u < a_t`. A non-finite proposal is rejected.

    Parameters
    ----------
    posterior
        The localized tempered posterior.
    step_size
        ε > 0, or per-coordinate steps (a NumPy array, as for :func:`sgld`; the proposal's
        covariance is then diag(ε)).

    Returns
    -------
    SamplingAlgorithm
        ``init(position)`` and ``step(key, state, batch, diagnose=False)``; the info
        describes :math:`w_t` and, with ``diagnose=True``, ``mala_acceptance`` is
        :math:`a_t`. Each step costs two gradient evaluations.

    Notes
    -----
    U and ∇U are evaluated on the step's batch at both points. The chain is exactly
    invariant for the localized posterior only when that batch is the whole data: pass
    ``batch_size = n`` (array data) or a one-batch iterable. With minibatches it is a
    Metropolis test on a random potential and no longer exact.
    """
    backend = posterior.backend
    epsilon = _Step(posterior, step_size)

    def init(position: Array) -> MALAState:
        return MALAState(position=position)

    def step(key: Key, state: MALAState, batch: Any, diagnose: bool = False
             ) -> tuple[MALAState, SampleInfo]:
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
        info = _describe(here,
                         xp.exp(xp.clip(log_ratio, max=0.0)) if diagnose else None)
        return MALAState(new_position), info

    return SamplingAlgorithm(init, step)


@dataclass(frozen=True)
class MALA:
    """Settings of :func:`mala`: ``MALA(step_size=1e-4)`` (use with ``batch_size = n``).

    Parameters
    ----------
    step_size
        ε > 0.
    """

    step_size: float | np.ndarray
    name: str = field(default="mala", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", step_size_value(self.step_size))

    kernel = staticmethod(mala)

    def kernel_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :attr:`kernel` after the posterior."""
        return {"step_size": self.step_size}

    def build(self, posterior: LocalizedPosterior) -> SamplingAlgorithm:
        return mala(posterior, **self.kernel_arguments())

    def settings(self) -> dict[str, Any]:
        return _record(self)


_SAMPLERS = {"sgld": SGLD, "rmsprop_sgld": RMSPropSGLD, "sghmc": SGHMC, "sgnht": SGNHT,
             "mala": MALA}


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
            f"`sampler` must be a name such as 'sgld' (one of {sorted(_SAMPLERS)}) or a settings "
            "object with a "
            f"build(posterior) method (e.g. llc.samplers.SGLD(step_size=1e-4)); got {sampler!r}"
        )
    return sampler

