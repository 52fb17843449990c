"""The localized tempered posterior that every sampler targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._backend import Array, Backend, LossAndGrad

__all__ = ["LocalizedPosterior"]


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
        The effective inverse temperature nβ (> 0).
    localization
        The strength γ ≥ 0 of the pull back to w*.
    backend
        The adapter that owns the arrays (noise, norms).
    """

    loss_and_grad: LossAndGrad
    center: Array
    nbeta: float
    localization: float
    backend: Backend

    def potential_gradient(self, position: Array, batch: Any) -> tuple[Array, Array, Array]:
        """``(L_B(w), ∇L_B(w), ∇U(w))`` at ``position`` on ``batch``."""
        loss, grad = self.loss_and_grad(position, batch)
        drift = self.nbeta * grad + self.localization * (position - self.center)
        return loss, grad, drift

    def distance(self, position: Array) -> Array:
        """‖w − w*‖ as a framework scalar."""
        xp = self.backend.namespace(position)
        return xp.linalg.vector_norm(position - self.center)
