"""Test problems with a known learning coefficient λ (ground truth for the estimators).

Every problem is a :class:`Problem`: NumPy float64 data and minimiser, an array-API loss
that runs unchanged on NumPy, PyTorch and JAX arrays, an analytic gradient for the NumPy
backend, and the exact λ from the literature (docs/design.md §3).

- :class:`LinearRegression` — regular, λ = d/2.
- :class:`ReducedRankRegression` — Aoyagi & Watanabe (2005), :func:`rrr_lambda`.
- :class:`DeepLinearNetwork` — Aoyagi (2024), :func:`dln_lambda`.
- :class:`Monomial`, :class:`RadialPotential`, :class:`SumOfPotentials` — potentials
  :math:`L_n = K`, with :meth:`Potential.exact_expectation` the exact finite-nβ target.
"""

from ._base import Problem
from ._truth import dln_lambda, rrr_lambda
from .potentials import Monomial, Potential, RadialPotential, SumOfPotentials
from .regression import DeepLinearNetwork, LinearRegression, ReducedRankRegression

__all__ = [
    "Problem",
    "LinearRegression",
    "ReducedRankRegression",
    "DeepLinearNetwork",
    "Potential",
    "Monomial",
    "SumOfPotentials",
    "RadialPotential",
    "rrr_lambda",
    "dln_lambda",
]
