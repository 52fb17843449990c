"""RMSProp-preconditioned SGLD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._backend import Array, Key
from .._validate import positive_float
from ..posterior import LocalizedPosterior
from ._base import (Check, Sampler, SampleInfo, _describe, _flag, _Step, _unit_interval,
                    _zero_scalar, step_size_value)

__all__ = ["RMSPROP_EPS_STABILITY", "RMSPropSGLD", "RMSPropSGLDState", "rmsprop_denominator"]

#: Default stabiliser ``a`` of :class:`RMSPropSGLD` (see ``eps_stability`` for the choice).
RMSPROP_EPS_STABILITY = 0.1


def rmsprop_denominator(xp: Any, square_avg: Array, count: Array, beta2: Any,
                        eps_stability: Any, bias_correction: bool) -> Array:
    r""":math:`\sqrt{\hat v_t} + a`, the per-coordinate divisor of RMSProp-SGLD's step
    (:math:`\hat v_t = v_t / (1 - \beta_2^t)` with ``bias_correction``, else :math:`v_t`)."""
    corrected = square_avg / (1.0 - beta2 ** count) if bias_correction else square_avg
    return xp.sqrt(corrected) + eps_stability


class RMSPropSGLDState(NamedTuple):
    """State of RMSProp-SGLD: the position, the running mean v of g², the step count t."""

    position: Array
    square_avg: Array
    count: Array  # 0-d: number of updates of square_avg so far


@dataclass(frozen=True)
class RMSPropSGLD(Sampler):
    r"""RMSProp-preconditioned SGLD (Li et al. 2016; Hitchcock & Hoogland 2025;
    docs/design.md §2): ``RMSPropSGLD(step_size=1e-4)``.

    With :math:`g_t = \nabla L_{B_t}(w_t)` the gradient of the mean minibatch loss (the
    localization term does not enter the statistics) and all operations per coordinate:

    .. math::

        v_0 &= 1, \qquad v_t = b_2\, v_{t-1} + (1 - b_2)\, g_t^2, \qquad
        \hat v_t = \frac{v_t}{1 - b_2^{\,t}}, \qquad
        \epsilon_t = \frac{\epsilon}{\sqrt{\hat v_t} + a}, \\
        w_{t+1} &= w_t - \frac{\epsilon_t}{2}\Big(\gamma\,(w_t - w^*)
                   + n\beta\, g_t\Big) + \sqrt{\epsilon_t}\,\xi_t,
        \qquad \xi_t \sim \mathcal N(0, I).

    Without bias correction :math:`\hat v_t = v_t`.

    Parameters
    ----------
    step_size
        ε > 0, the base step size, or per-coordinate base steps (as for :class:`SGLD`).
    beta2
        b₂ ∈ [0, 1), the decay of the running mean of g² (default 0.99).
    eps_stability
        a > 0, added to :math:`\sqrt{\hat v_t}` (default 0.1). It bounds the per-coordinate
        step by ε / a, which matters where the loss gradient vanishes (a flat direction, a
        dead unit): there only the localization acts, and a step ε / a ≥ 4 / γ would
        diverge. The default a = 0.1 (devinterp's value, so the two variants differ only in
        v₀ and the bias correction) caps the amplification over plain SGLD at 10×, so an ε
        that is stable for SGLD stays stable here whenever 10 εγ < 4; the preconditioning
        still acts on every coordinate whose RMS gradient of the mean loss exceeds about 0.1
        (typical magnitudes near a minimum are 10⁻²–1). A value like RMSProp's 10⁻⁸ would let
        ε_t grow by 10⁸ on a zero-gradient coordinate.
    bias_correction
        Divide v_t by 1 − b₂ᵗ (default True). With v₀ = 1 (docs/design.md §2) this makes the
        first steps small (:math:`\hat v_1 = b_2/(1-b_2) + g_1^2 \approx 99`): the chain
        starts cautiously and reaches its full step after a few hundred steps, when
        :math:`b_2^t/(1-b_2^t)` has decayed.
    devinterp_variant
        devinterp's variant: v₀ = 0, a = 0.1, b₂ = 0.99, no bias correction. Settings left
        at ``None`` take the chosen variant's defaults (the frozen object holds the resolved
        values); a conflicting explicit setting is an error.

    Notes
    -----
    The kernel is ``RMSPropSGLD.step(posterior, key, state, batch, *, step_size, beta2,
    eps_stability, bias_correction)``. Its check is the MALA acceptance of the
    preconditioned Langevin move, the proposal :math:`\mathcal N(w - \tfrac{\epsilon_t}{2}
    \odot\nabla U(w), \operatorname{diag} \epsilon_t)` with :math:`\epsilon_t` held fixed in
    both directions (one more gradient evaluation), and ``grad_power``.

    Like Li et al. we drop the correction term Γ(w) of a position-dependent preconditioner:
    the sampler is exact in the limit of a preconditioner that is constant over the
    posterior. Where v̂ follows the position instead (a full-batch gradient that vanishes at
    the mode, while the chain moves slowly compared with the 1/(1 − b₂) = 100-step memory of
    v), the chain samples about :math:`e^{-U(w)}(\sqrt{\hat v(w)} + a)`, whose variances
    are too large (docs/benchmarks.md, "Samplers at a matched number of gradient
    evaluations"). Near w* in λ̂ estimation the minibatch noise dominates g and v̂ is nearly
    constant (the regime tests/test_samplers.py checks against exact moments).
    """

    step_size: float | np.ndarray
    beta2: float | None = None
    eps_stability: float | None = None
    bias_correction: bool | None = None
    devinterp_variant: bool = False
    name: ClassVar[str] = "rmsprop_sgld"

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

    def kernel_arguments(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "beta2": self.beta2,
                "eps_stability": self.eps_stability,
                "bias_correction": bool(self.bias_correction)}

    def init(self, position: Array, backend: Any) -> RMSPropSGLDState:
        return RMSPropSGLDState(position=position,
                                square_avg=position * 0 + self.initial_square_avg,
                                count=_zero_scalar(backend, position))

    @staticmethod
    def step(posterior: LocalizedPosterior, key: Key, state: RMSPropSGLDState, batch: Any, *,
             step_size: Any, beta2: Any, eps_stability: Any, bias_correction: bool
             ) -> tuple[RMSPropSGLDState, SampleInfo, Check]:
        backend = posterior.backend
        size = _Step(posterior, step_size).size
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
        local_step = size / denominator
        noise = backend.normal(key, position)
        new_position = position - (0.5 * local_step) * drift + xp.sqrt(local_step) * noise

        def check() -> dict[str, Array]:
            proposal_loss, _, proposal_drift = posterior.potential_gradient(new_position, batch)
            log_ratio = posterior.langevin_log_ratio(local_step, position, loss, drift,
                                                     new_position, proposal_loss, proposal_drift)
            return {"mala_acceptance": xp.exp(xp.clip(log_ratio, max=0.0)),
                    "grad_power": xp.sum(grad * grad / denominator)}

        return RMSPropSGLDState(new_position, square_avg, count), _describe(here), check
