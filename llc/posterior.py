"""The localized tempered posterior that every sampler targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ._backend import Array, Backend, LossAndGrad

__all__ = ["LocalizedPosterior", "PotentialEvaluation"]


class PotentialEvaluation(NamedTuple):
    """What a sampler needs at the point where it takes its gradient (framework arrays)."""

    loss: Array  # L_B(w)
    grad: Array | None  # ∇L_B(w); None when the sampler asked not to keep it
    drift: Array  # ∇U(w) = nβ ∇L_B(w) + γ (w − w*)
    distance: Array  # ‖w − w*‖ (0-d)
    grad_norm: Array  # ‖∇L_B(w)‖ (0-d)
    first_order: Array | None = None  # nβ ∇L_n(w*)·(w − w*) (0-d), with a known slope


@dataclass(frozen=True)
class LocalizedPosterior:
    r"""The localized tempered posterior around w*.

    .. math::

        p(w) \propto \exp\!\big(-n\beta\, L_n(w) - \tfrac{\gamma}{2}\,\lVert w - w^*\rVert^2\big)

    with potential :math:`U(w) = n\beta\, L_B(w) + \tfrac{\gamma}{2}\lVert w - w^*\rVert^2` on a
    minibatch :math:`B`. Positions are flat parameter vectors of the backend's framework.

    Attributes
    ----------
    loss_and_grad
        ``(position, batch) -> (L_B(position), ∇L_B(position))``, mean minibatch loss.
    center
        w* as a flat vector (a private copy; never the user's arrays).
    nbeta
        The effective inverse temperature nβ (> 0): a number, or a 0-d array of the backend
        inside a compiled program that takes it as an argument (``llc._programs``).
    localization
        The strength γ ≥ 0 of the pull back to w*: a number, or a 0-d array as ``nbeta``
        (γ = 0 is then the number 0, which drops the term from the drift).
    backend
        The adapter that owns the arrays (noise, norms).
    slope
        ∇L_n(w*) as a flat vector, or ``None``. When given, every evaluation also reports
        the first-order term nβ ∇L_n(w*)·(w − w*) of the loss increase (one dot product).
    """

    loss_and_grad: LossAndGrad
    center: Array
    nbeta: Any
    localization: Any
    backend: Backend
    slope: Array | None = None

    def potential_gradient(self, position: Array, batch: Any) -> tuple[Array, Array, Array]:
        """``(L_B(w), ∇L_B(w), ∇U(w))`` at ``position`` on ``batch``."""
        loss, grad = self.loss_and_grad(position, batch)
        return loss, grad, self._drift(grad, position - self.center)

    def evaluate(self, position: Array, batch: Any, keep_grad: bool = True
                 ) -> PotentialEvaluation:
        """:meth:`potential_gradient`, ‖w − w*‖ and ‖∇L_B(w)‖.

        The drift is written over the offset w − w* once its norm is taken, and, with
        ``keep_grad=False`` (a sampler that needs only the drift), the gradient is not kept:
        with a framework of mutable arrays (torch, NumPy) the step then holds two
        parameter-sized arrays fewer at its peak.
        """
        loss, grad = self.loss_and_grad(position, batch)
        xp = self.backend.namespace(position)
        grad_norm = xp.linalg.vector_norm(grad)
        offset = position - self.center
        distance = xp.linalg.vector_norm(offset)
        first_order = None if self.slope is None else self.nbeta * xp.sum(self.slope * offset)
        drift = self._drift(grad, offset)
        return PotentialEvaluation(loss, grad if keep_grad else None, drift, distance, grad_norm,
                                   first_order)

    def _drift(self, grad: Array, offset: Array) -> Array:
        """nβ ∇L_B(w) + γ (w − w*), written over ``offset``, a temporary of the caller's."""
        if isinstance(self.localization, (int, float)) and self.localization == 0:
            return self.backend.linear_combination((self.nbeta, grad))
        return self.backend.linear_combination((self.nbeta, grad), (self.localization, offset),
                                               reuse=1)

    def potential(self, position: Array, loss: Array) -> Array:
        """U_B(w) = nβ L_B(w) + (γ/2)‖w − w*‖² from the minibatch loss at ``position``."""
        xp = self.backend.namespace(position)
        offset = position - self.center
        return self.nbeta * loss + 0.5 * self.localization * xp.sum(offset * offset)

    def langevin_log_ratio(self, step_size: Any, position: Array, loss: Array, drift: Array,
                           proposal: Array, proposal_loss: Array, proposal_drift: Array) -> Array:
        r"""Log Metropolis–Hastings ratio of the Langevin move ``position`` → ``proposal``.

        .. math::

            \log r = U(w) - U(w') + \log q(w \mid w') - \log q(w' \mid w), \qquad
            q(w' \mid w) = \mathcal N\big(w';\, w - \tfrac{\epsilon}{2}\odot\nabla U(w),\,
            \operatorname{diag}(\epsilon)\big)

        with U and ∇U on the same minibatch at both points. ``step_size`` is a float ε or an
        array of per-coordinate steps held fixed in both directions (the normalising
        constants of q then cancel).
        """
        xp = self.backend.namespace(position)
        forward = proposal - position + (0.5 * step_size) * drift
        backward = position - proposal + (0.5 * step_size) * proposal_drift
        if len(getattr(step_size, "shape", ())) == 0:  # one ε for every coordinate
            transition = (xp.sum(forward * forward) - xp.sum(backward * backward)) \
                / (2.0 * step_size)
        else:
            transition = xp.sum((forward * forward - backward * backward) / (2.0 * step_size))
        return (self.potential(position, loss) - self.potential(proposal, proposal_loss)
                + transition)

    def langevin_acceptance(self, step_size: Any, position: Array, loss: Array, drift: Array,
                            proposal: Array, batch: Any) -> Array:
        r"""MALA acceptance probability :math:`\min(1, r)` of a Langevin move ``position`` →
        ``proposal`` (:meth:`langevin_log_ratio`), U and ∇U on ``batch`` at both points.

        Costs one gradient evaluation at the proposal. On the known-λ problems the accurate
        SGLD steps gave a ≥ 0.98 (docs/trust.md).
        """
        proposal_loss, _, proposal_drift = self.potential_gradient(proposal, batch)
        log_ratio = self.langevin_log_ratio(step_size, position, loss, drift, proposal,
                                            proposal_loss, proposal_drift)
        return self.backend.namespace(position).exp(
            self.backend.namespace(position).clip(log_ratio, max=0.0))

    def distance(self, position: Array) -> Array:
        """‖w − w*‖ as a framework scalar."""
        xp = self.backend.namespace(position)
        return xp.linalg.vector_norm(position - self.center)
