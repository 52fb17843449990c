r"""The estimated step bias of λ̂: one formula for ``step_size="auto"`` and the health check.

For a quadratic potential, SGLD at step ε adds :math:`\tfrac{\epsilon}{8}\,\mathbb E
\lVert\nabla U_B\rVert^2` to E[U] − U* (``llc._engine.adapt`` derives it): the curvature's
part and the minibatch noise's. SGHMC and SGNHT add the first at their curvature-equivalent
step ε_c and the second at their noise-equivalent step ε_n, ~2/α times larger. Only the
loss's share of the noise's heat reaches λ̂ = nβ (E[L] − L*): along an eigendirection of
nβ H_L with curvature K_i, the heat splits between nβ L and the localization term
γ/2 ‖w − w*‖² as K_i : γ. With the noise covariance following the curvature (N_i ∝ K_i:
Fisher ≈ Hessian near a minimum), the loss's share of the noise heat is

.. math::

    s = \frac{\sum_i K_i^2/(K_i+\gamma)}{\sum_i K_i}
      = \frac{(\overline G - N)_+}{(\overline G - N)_+ + 2\gamma\hat\lambda},

because at equilibrium the curvature part of the gradient power is
:math:`\overline G - N = \sum_i K_i^2/(K_i+\gamma)` and :math:`\hat\lambda = \tfrac12\sum_i
K_i/(K_i+\gamma)`. Where γ is small beside the curvatures that carry the gradient (γ = 1 on a
network with nβ in the thousands) s ≈ 1; where the chains sit in the localization's Gaussian
(γ = 100 on a classifier whose loss curves less than γ in most directions: Ḡ ≈ N) s ≈ 0, and
counting the noise whole reported a bias above 10 % of λ̂ at steps whose λ̂ did not move when
the step was tripled (SGHMC and SGLD; docs/step_size_auto.md).
"""

from __future__ import annotations

__all__ = ["estimated_step_bias", "noise_share"]


def noise_share(power: float, noise: float, llc: float, localization: float) -> float:
    """s: the share of the minibatch noise's heat that reaches the loss (module docs), in
    [0, 1]; 1 where λ̂ or γ is not positive (nothing measured to split it by)."""
    signal = max(power - noise, 0.0)
    held = 2.0 * localization * llc
    if not held > 0:
        return 1.0
    return signal / (signal + held)


def estimated_step_bias(curvature_step: float, noise_step: float, power: float, noise: float,
                        llc: float, localization: float) -> float:
    r"""b̂ = (ε_c/8)·(Ḡ − N) + (ε_n/8)·s·N, at least 0: the curvature's part at ε_c, the
    noise's at ε_n and only the loss's share s of it (for SGLD, ε_c = ε_n = ε: b̂ =
    (ε/8)·(Ḡ − (1 − s)·N), and (ε/8)·Ḡ exactly where s = 1).

    Parameters
    ----------
    curvature_step, noise_step
        ε_c and ε_n, the sampler's curvature- and noise-equivalent SGLD steps.
    power
        Ḡ: the mean of nβ²‖∇L_B(w)‖² over the chains' positions (noise included).
    noise
        N = nβ² tr Σ_B, the minibatch gradient's summed variance where the chains are.
    llc, localization
        λ̂ and γ, for the share s of :func:`noise_share`; λ̂ = 0 keeps the noise whole
        (the tuner's first guess, before any λ̂ is measured, and SGLD's tuner, which does not
        measure N where the chains are).
    """
    share = noise_share(power, noise, llc, localization)
    bias = (curvature_step * power + (noise_step * share - curvature_step) * noise) / 8.0
    return max(bias, 0.0)
