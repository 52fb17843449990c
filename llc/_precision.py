r"""What the model's floating-point precision lets the MALA acceptance see.

The MALA acceptance (the ``low-mala-acceptance`` check, ``step_size="auto"``'s floor) is
:math:`\min(1, e^{-\Delta})` with Δ containing nβ times a difference of two losses. A loss
computed in precision u (the unit roundoff: 2⁻⁸ for bfloat16, 2⁻¹¹ for float16, 2⁻²⁴ for
float32) carries rounding errors of about u·|L|, so Δ carries noise of about

.. math::

    r = n\beta\,u\,\lvert L_n(w^*)\rvert ,

whatever the step. Noise of standard deviation σ in Δ lowers the mean acceptance by about
σ/√(2π), so above r = 0.05 (0.02 of acceptance, the floor's whole tolerance 1 − 0.98) the
acceptance measures the rounding, not the step: a bfloat16 network with nβ in the thousands
has r of order 1 and acceptances near 0.5 at any step. There the ``low-mala-acceptance``
check and :func:`llc.calibrate`'s acceptance rule are not applied; the step is judged by the
estimated step bias (:mod:`llc._bias`) and, in calibrate, by the plateau of λ̂.

r counts only the rounding of the loss's value. The forward pass rounds its intermediate
values too (a classifier's logits, ~u·|z| each), which r does not see: on a trained digits
classifier whose loss is near 0, r ≈ 0 while its bfloat16 acceptance still fell with the
rounding. So ``step_size="auto"``, whose acceptance floor guards singular models against a
too-large step, refuses every model narrower than float32 (:func:`narrower_than_float32`).
"""

from __future__ import annotations

import math

__all__ = ["ACCEPTANCE_ROUNDING_LIMIT", "UNIT_ROUNDOFF", "loss_rounding",
           "narrower_than_float32", "swamps_acceptance"]

#: Unit roundoff 2^−p of the floating dtypes a model may run in (p: significand bits).
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24,
                 "float64": 2.0**-53}

#: r above which the MALA acceptance is not used (module docs).
ACCEPTANCE_ROUNDING_LIMIT = 0.05


def swamps_acceptance(rounding: float) -> bool:
    """Whether a loss rounding r (:func:`loss_rounding`) swamps the MALA acceptance."""
    return rounding >= ACCEPTANCE_ROUNDING_LIMIT


def narrower_than_float32(dtype: str) -> bool:
    """Whether ``dtype`` (a name) is a floating type with fewer significand bits than
    float32 (bfloat16, float16)."""
    return UNIT_ROUNDOFF.get(dtype, 0.0) > UNIT_ROUNDOFF["float32"]


def loss_rounding(nbeta: float, loss: float, dtype: str) -> float:
    """r = nβ·u·|L_n(w*)|: the rounding noise of the MALA log-ratio for a model whose params
    are ``dtype`` (0 for a dtype not in :data:`UNIT_ROUNDOFF`, or a non-finite loss)."""
    unit = UNIT_ROUNDOFF.get(dtype, 0.0)
    return float(nbeta * unit * abs(loss)) if math.isfinite(loss) else 0.0
