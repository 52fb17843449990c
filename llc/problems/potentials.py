r"""Potentials: "models" whose empirical loss is a fixed function, :math:`L_n(w) = K(w)`.

They have no statistical data. :meth:`Potential.sample_data` returns a dummy ``(n, 1)``
array of zeros that the loss ignores, so the potentials plug into the same estimator as the
regression problems; the localized tempered posterior is then exactly

.. math::

    p(w) \propto \exp\!\big(-n\beta\,K(w) - \tfrac{\gamma}{2}\lVert w - w^*\rVert^2\big),

and for one- and two-dimensional potentials :meth:`Potential.exact_expectation` computes
:math:`E_p[n\beta K(w)] - n\beta K(w^*)` (the exact value that λ̂ estimates at finite nβ) by
deterministic quadrature.

Finite-nβ behaviour of ``Monomial((1, 2))`` (:math:`K = w_1^2 w_2^4`, λ = 1/4 at 0): the
exact :math:`E_p[n\beta K]` at localization γ and nβ from ``exact_expectation`` (agrees with
an independent 1-D reduction, integrating :math:`w_1` in closed form, to ~1e-15 relative):

=======  =========  =========  =========  =========  =========
γ        nβ = 1e2   nβ = 1e3   nβ = 1e4   nβ = 1e5   nβ = 1e6
=======  =========  =========  =========  =========  =========
1        0.205712   0.224851   0.235811   0.242013   0.245507
10       0.063434   0.123860   0.173435   0.205712   0.224851
100      0.000297   0.002749   0.018261   0.063434   0.123860
=======  =========  =========  =========  =========  =========

The target lies below λ = 1/4 and approaches it slowly. Because K is homogeneous of degree
6, rescaling :math:`w \to s w` shows the value depends on nβ and γ only through
:math:`n\beta/\gamma^3` (so the rows are shifted copies of each other), and the deficit
:math:`1/4 - E` shrinks like :math:`(\gamma^3/n\beta)^{1/4}` (a factor 0.56 per decade of nβ).
Strong localization therefore needs a much larger nβ: at γ = 100 even nβ = 1e6 gives half
of λ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import Problem, check_n, check_seed, first_leaf, namespace
from ._truth import _as_int

__all__ = ["Potential", "Monomial", "SumOfPotentials", "RadialPotential"]

# Quadrature: the Gaussian localizer is truncated where it has fallen to exp(-_TAIL); panels
# are graded geometrically towards the anchors down to _SMALLEST times the half-width.
_TAIL = 60.0
_SMALLEST = 1e-11
_CHUNK = 1 << 21  # grid points evaluated at once in two dimensions


def _check_nbeta_localization(nbeta: float, localization: float) -> tuple[float, float]:
    nbeta, localization = float(nbeta), float(localization)
    if not (math.isfinite(nbeta) and nbeta >= 0):
        raise ValueError(f"`nbeta` must be a finite number >= 0, got {nbeta!r}")
    if not (math.isfinite(localization) and localization >= 0):
        raise ValueError(f"`localization` must be a finite number >= 0, got {localization!r}")
    return nbeta, localization


def _resolution(resolution: int) -> tuple[float, int]:
    """(grading ratio, Gauss–Legendre order) of quadrature resolution level ``resolution``."""
    level = _as_int(resolution, "resolution", minimum=1)
    return 2.0 ** (1.0 / level), 12 + 8 * level


def _graded_rule(
    lo: float, hi: float, anchors: Sequence[float], ratio: float, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre nodes and weights on ``[lo, hi]``.

    Panel breakpoints are graded geometrically (factor ``ratio``) towards each anchor, down
    to ``_SMALLEST`` times the interval length, so features of any scale located at an
    anchor (the zero set of K, the localizer's centre) are resolved by a fixed number of
    nodes per octave of scale.
    """
    points = {lo, hi}
    for anchor in anchors:
        if lo < anchor < hi:
            points.add(anchor)
        span = max(abs(anchor - lo), abs(hi - anchor))
        steps = int(math.ceil(math.log(1.0 / _SMALLEST) / math.log(ratio)))
        offsets = span * ratio ** -np.arange(steps + 1)
        for point in np.concatenate([anchor - offsets, anchor + offsets]):
            if lo < point < hi:
                points.add(float(point))
    breaks = np.unique(np.array(sorted(points)))
    x, w = np.polynomial.legendre.leggauss(order)
    mid = 0.5 * (breaks[1:] + breaks[:-1])
    half = 0.5 * (breaks[1:] - breaks[:-1])
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    weights = (half[:, None] * w).ravel()
    return nodes, weights


class _LogSumAccumulator:
    """Running ``sum(exp(logw))`` and ``sum(value * exp(logw))`` without overflow."""

    def __init__(self) -> None:
        self.shift = -math.inf
        self.total = 0.0
        self.weighted = 0.0

    def add(self, logw: np.ndarray, value: np.ndarray) -> None:
        top = float(np.max(logw))
        if top == -math.inf:
            return
        if top > self.shift:
            scale = math.exp(self.shift - top) if self.shift > -math.inf else 0.0
            self.total *= scale
            self.weighted *= scale
            self.shift = top
        weights = np.exp(logw - self.shift)
        self.total += float(np.sum(weights))
        self.weighted += float(np.sum(np.where(weights > 0, value * weights, 0.0)))

    def mean(self) -> float:
        if not self.total > 0:
            raise FloatingPointError("quadrature found no posterior mass")
        return self.weighted / self.total


class Potential(Problem):
    r"""A potential :math:`K(w) \ge 0` used as the loss: :math:`L_n(w) = K(w)`.

    Subclasses implement :meth:`potential` and :meth:`potential_grad` with the array-API
    namespace, for ``w`` of shape ``(..., dim)`` (last axis the coordinates), plus
    :attr:`true_lambda` and :attr:`name`.

    Parameters
    ----------
    dim : int
        Number of parameters.
    center : array_like of shape (dim,), optional
        The point :math:`w^*` where λ is measured, a minimum of K (zeros by default).

    Notes
    -----
    Params: ``{"w": (dim,)}``. Data: ``(np.zeros((n, 1)),)``, ignored by the loss.
    """

    def __init__(self, dim: int, center: Any = None):
        self.dim = _as_int(dim, "dim", minimum=1)
        if center is None:
            center = np.zeros(self.dim)
        center = np.array(center, dtype=np.float64)
        if center.shape != (self.dim,):
            raise ValueError(f"`center` must have shape ({self.dim},), got {center.shape}")
        if not np.all(np.isfinite(center)):
            raise ValueError(f"`center` must be finite, got {center}")
        self.center = center

    # ---- the potential ----------------------------------------------------------------
    def potential(self, w: Any) -> Any:
        """K(w) for ``w`` of shape ``(..., dim)``; returns shape ``(...)``."""
        raise NotImplementedError

    def potential_grad(self, w: Any) -> Any:
        """∇K(w) for ``w`` of shape ``(..., dim)``; returns shape ``(..., dim)``."""
        raise NotImplementedError

    # ---- Problem interface -----------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return self.dim

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.dim,)}

    def sample_data(self, n: int, seed: int) -> tuple[np.ndarray]:
        """``(np.zeros((n, 1)),)``: a dummy dataset the loss ignores (``seed`` is unused)."""
        n = check_n(n)
        check_seed(seed)
        return (np.zeros((n, 1)),)

    def minimizer(self, data: tuple[np.ndarray, ...] | None = None) -> dict[str, np.ndarray]:
        """``{"w": center}`` (the data are irrelevant)."""
        return {"w": self.center.copy()}

    def _w(self, params: dict[str, Any]) -> Any:
        first_leaf(params)
        try:
            return params["w"]
        except KeyError:
            raise KeyError(f"`params` lacks 'w'; got keys {list(params)}") from None

    def loss(self, params: dict[str, Any], batch: tuple[Any, ...] | None = None) -> Any:
        """K(params["w"]); ``batch`` is ignored."""
        return self.potential(self._w(params))

    def loss_and_grad(
        self, params: dict[str, Any], batch: tuple[Any, ...] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """K(params["w"]) and ``{"w": ∇K}``; ``batch`` is ignored."""
        w = self._w(params)
        return self.potential(w), {"w": self.potential_grad(w)}

    # ---- exact finite-nβ reference --------------------------------------------------------
    def _anchors(self, index: int) -> list[float]:
        """Coordinates along axis ``index`` where the integrand may vary on small scales."""
        return [0.0, float(self.center[index])]

    def exact_expectation(self, nbeta: float, localization: float, *, resolution: int = 1) -> float:
        r"""Exact :math:`E_p[n\beta K(w)] - n\beta K(w^*)` under the localized posterior.

        .. math::

            p(w) \propto \exp\!\big(-n\beta K(w) - \tfrac{\gamma}{2}\lVert w - w^*\rVert^2\big)

        with :math:`w^*` = ``center``. This is the value the LLC estimator
        :math:`\hat\lambda = n\beta(E_p[L_n] - L_n(w^*))` converges to for a perfect sampler;
        it tends to λ only as :math:`n\beta\to\infty`.

        Parameters
        ----------
        nbeta : float
            nβ, the inverse temperature times n (``>= 0``).
        localization : float
            γ, the strength of the Gaussian localizer (``> 0``).
        resolution : int, default 1
            Quadrature level: panels graded by :math:`2^{1/\text{resolution}}`, Gauss–Legendre
            of order ``12 + 8 * resolution`` per panel. Level 1 agrees with levels 2 and 3 to
            1e-11 relative or better on the built-in potentials.

        Returns
        -------
        float

        Raises
        ------
        NotImplementedError
            If ``dim > 2`` (tensor-product quadrature only up to two dimensions).
        ValueError
            If ``localization`` is not positive (the posterior need not be normalisable).

        Notes
        -----
        Tensor-product composite Gauss–Legendre quadrature on :math:`w^* \pm R` per axis, with
        :math:`\gamma R^2/2 = 60`, and panels graded geometrically towards 0 and
        :math:`w^*_i` (where K's zero set and the localizer put small-scale structure).
        """
        nbeta, gamma = _check_nbeta_localization(nbeta, localization)
        if self.dim > 2:
            raise NotImplementedError(
                f"exact_expectation is implemented for dim <= 2 (got dim = {self.dim})"
            )
        if not gamma > 0:
            raise ValueError(
                f"`localization` must be > 0 for exact_expectation, got {localization!r}"
            )
        ratio, order = _resolution(resolution)
        k_center = float(self.potential(self.center))
        half_width = math.sqrt(2.0 * _TAIL / gamma)
        rules = []
        for index in range(self.dim):
            c = float(self.center[index])
            anchors = self._anchors(index)
            rules.append(_graded_rule(c - half_width, c + half_width, anchors, ratio, order))
        acc = _LogSumAccumulator()
        if self.dim == 1:
            nodes, weights = rules[0]
            self._accumulate(acc, nodes[:, None], np.log(weights), nbeta, gamma, k_center)
        else:
            (x1, w1), (x2, w2) = rules
            rows = max(1, _CHUNK // x2.size)
            for start in range(0, x1.size, rows):
                a, wa = x1[start : start + rows], w1[start : start + rows]
                grid = np.stack(np.broadcast_arrays(a[:, None], x2[None, :]), axis=-1)
                logw = np.log(wa)[:, None] + np.log(w2)[None, :]
                self._accumulate(acc, grid, logw, nbeta, gamma, k_center)
        return acc.mean()

    def _accumulate(
        self,
        acc: _LogSumAccumulator,
        points: np.ndarray,
        log_weights: np.ndarray,
        nbeta: float,
        gamma: float,
        k_center: float,
    ) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            excess = nbeta * (np.asarray(self.potential(points)) - k_center)
            distance2 = np.sum((points - self.center) ** 2, axis=-1)
            logw = log_weights - excess - 0.5 * gamma * distance2
            logw = np.where(np.isnan(logw), -np.inf, logw)
            acc.add(logw, excess)


class Monomial(Potential):
    r"""Monomial potential :math:`K(w) = \prod_i w_i^{2k_i}`.

    Parameters
    ----------
    exponents : sequence of int
        :math:`k = (k_1, \dots, k_d)`, integers ``>= 0``, at least one positive.
    center : array_like of shape (d,), optional
        :math:`w^*`, a point of the zero set of K: some coordinate with :math:`k_i > 0` must
        be 0. Defaults to the origin.

    Notes
    -----
    With a flat prior near :math:`w^*`, only the coordinates that vanish at :math:`w^*`
    matter (the others contribute a nonzero factor), so

    .. math::

        \lambda(w^*) = \min_{i:\ k_i > 0,\ w^*_i = 0} \frac{1}{2k_i}.

    Examples: :math:`w_1^2w_2^4` (``exponents=(1, 2)``) has λ = 1/4 at 0 and at (1, 0) and
    λ = 1/2 at (0, 1); :math:`w_1^2w_2^6` has λ = 1/6 at 0.

    λ is a limit at fixed localization only if the localizer keeps the posterior away from
    deeper singularities: at (0, 1) the line :math:`w_2 = 0` (λ = 1/4) is at distance 1, and
    :meth:`exact_expectation` with γ = 1 gives 0.228, 0.243, 0.248, 0.249 at nβ = 1e2, 1e4,
    1e6, 1e8 (tending to 1/4, not 1/2); γ = 10 is non-monotone (0.39, 0.45, 0.42, 0.36); only
    γ ≳ 100 with nβ ≳ 1e4 gives ≈ 1/2.

    References
    ----------
    S. Watanabe, *Algebraic Geometry and Statistical Learning Theory*, Cambridge University
    Press, 2009 (normal crossing form); E. Lau, Z. Furman, G. Wang, D. Murfet, S. Wei, "The
    local learning coefficient: a singularity-aware complexity measure", AISTATS 2025.
    """

    def __init__(self, exponents: Sequence[int], center: Any = None):
        try:
            exponents = list(exponents)
        except TypeError:
            raise ValueError(
                f"`exponents` must be a sequence of integers, got {exponents!r}"
            ) from None
        if not exponents:
            raise ValueError("`exponents` must not be empty")
        self.exponents = tuple(
            _as_int(k, f"exponents[{i}]", minimum=0) for i, k in enumerate(exponents)
        )
        if not any(self.exponents):
            raise ValueError(f"`exponents` needs at least one positive entry, got {self.exponents}")
        super().__init__(len(self.exponents), center)
        if not any(k > 0 and c == 0 for k, c in zip(self.exponents, self.center)):
            raise ValueError(
                f"`center` {self.center.tolist()} is not in the zero set of K: some coordinate "
                f"with a positive exponent must be 0"
            )

    @property
    def true_lambda(self) -> float:
        return min(1 / (2 * k) for k, c in zip(self.exponents, self.center) if k > 0 and c == 0)

    @property
    def name(self) -> str:
        name = "monomial_" + "-".join(map(str, self.exponents))
        if np.any(self.center != 0):
            name += "_at_" + "_".join(f"{c:g}" for c in self.center)
        return name

    def potential(self, w: Any) -> Any:
        value = None
        for i, k in enumerate(self.exponents):
            if k:
                factor = w[..., i] ** (2 * k)
                value = factor if value is None else value * factor
        return value

    def potential_grad(self, w: Any) -> Any:
        xp = namespace(w)
        grads = []
        for j, kj in enumerate(self.exponents):
            if not kj:
                grads.append(xp.zeros_like(w[..., j]))
                continue
            g = (2 * kj) * w[..., j] ** (2 * kj - 1)
            for i, k in enumerate(self.exponents):
                if i != j and k:
                    g = g * w[..., i] ** (2 * k)
            grads.append(g)
        return xp.stack(grads, axis=-1)

    def _repr_fields(self) -> dict[str, Any]:
        return {"exponents": self.exponents, "center": tuple(self.center.tolist())}


class RadialPotential(Potential):
    r"""Radial potential :math:`K(w) = (\sum_{i=1}^d w_i^2)^p` at the origin.

    Parameters
    ----------
    dim : int
        d, the number of parameters.
    power : int
        p, an integer ``>= 1``.

    Notes
    -----
    In polar coordinates :math:`K = r^{2p}` and the volume element is :math:`r^{d-1}dr`, so
    :math:`V(\varepsilon) \propto \varepsilon^{d/(2p)}` and

    .. math::

        \lambda = \frac{d}{2p}.

    ``p = 1`` is a regular quadratic (λ = d/2). :meth:`exact_expectation` reduces to a
    one-dimensional radial integral and works in any dimension and also for γ = 0.
    """

    def __init__(self, dim: int, power: int):
        super().__init__(dim)
        self.power = _as_int(power, "power", minimum=1)

    @property
    def true_lambda(self) -> float:
        return self.dim / (2 * self.power)

    @property
    def name(self) -> str:
        return f"radial_d{self.dim}_p{self.power}"

    def potential(self, w: Any) -> Any:
        xp = namespace(w)
        return xp.sum(w * w, axis=-1) ** self.power

    def potential_grad(self, w: Any) -> Any:
        xp = namespace(w)
        s = xp.sum(w * w, axis=-1)
        scale = (2 * self.power) * s ** (self.power - 1)  # s**0 == 1, also at s = 0
        return xp.expand_dims(scale, axis=-1) * w

    def exact_expectation(self, nbeta: float, localization: float, *, resolution: int = 1) -> float:
        r"""Exact :math:`E_p[n\beta K(w)]` by a one-dimensional radial integral.

        .. math::

            E_p[n\beta K] = \frac{\int_0^\infty n\beta r^{2p}\,r^{d-1}
                e^{-n\beta r^{2p} - \gamma r^2/2}\,dr}
                {\int_0^\infty r^{d-1} e^{-n\beta r^{2p} - \gamma r^2/2}\,dr},

        by composite Gauss–Legendre quadrature graded towards 0 and the mode. Any ``dim``;
        ``localization`` may be 0 when ``nbeta > 0``. See :meth:`Potential.exact_expectation`.
        """
        nbeta, gamma = _check_nbeta_localization(nbeta, localization)
        if nbeta == 0 and gamma == 0:
            raise ValueError("`nbeta` and `localization` cannot both be 0 (improper posterior)")
        ratio, order = _resolution(resolution)
        d, p = self.dim, self.power

        def log_density(r: np.ndarray | float) -> Any:
            return (d - 1) * np.log(r) - nbeta * r ** (2 * p) - 0.5 * gamma * r**2

        def slope(r: float) -> float:
            return (d - 1) / r - 2 * p * nbeta * r ** (2 * p - 1) - gamma * r

        mode = 0.0
        if d > 1:  # the log-density is concave in r: bisect its derivative
            lo, hi = 1e-300, 1.0
            while slope(hi) > 0:
                lo, hi = hi, 2 * hi
            for _ in range(200):
                mid = math.sqrt(lo * hi) if hi / lo > 4 else 0.5 * (lo + hi)
                lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
            mode = 0.5 * (lo + hi)
        peak = float(log_density(mode)) if mode > 0 else 0.0
        step = max(mode, (nbeta + gamma) ** -0.5, 1e-300)
        edge = mode + step
        while float(log_density(edge)) > peak - 2 * _TAIL:
            edge = mode + 2 * (edge - mode)
        nodes, weights = _graded_rule(0.0, edge, [0.0, mode], ratio, order)
        acc = _LogSumAccumulator()
        acc.add(np.log(weights) + log_density(nodes), nbeta * nodes ** (2 * p))
        return acc.mean()

    def _repr_fields(self) -> dict[str, Any]:
        return {"dim": self.dim, "power": self.power}


class SumOfPotentials(Potential):
    r"""Sum of potentials over disjoint groups of variables, :math:`K(w) = \sum_j K_j(w_j)`.

    Parameters
    ----------
    *potentials : Potential
        The parts; ``w`` is their parameters concatenated in order, and ``center`` the
        concatenation of their centres.

    Notes
    -----
    Volumes multiply across disjoint variables, so learning coefficients add:

    .. math::

        \lambda = \sum_j \lambda_j.

    Examples: :math:`w_1^4 + w_2^4` → 1/2, :math:`w_1^2 + w_2^4` → 3/4. The localized
    posterior factorises over the groups, so :meth:`exact_expectation` is the sum of the
    parts' (each part of dimension at most 2, or radial).
    """

    def __init__(self, *potentials: Potential):
        if not potentials:
            raise ValueError("`potentials` must hold at least one Potential")
        for index, part in enumerate(potentials):
            if not isinstance(part, Potential):
                raise ValueError(
                    f"`potentials[{index}]` must be a Potential, got {type(part).__name__}"
                )
        self.parts = tuple(potentials)
        bounds = np.cumsum([0] + [part.dim for part in self.parts])
        self._slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        super().__init__(int(bounds[-1]), np.concatenate([part.center for part in self.parts]))

    @property
    def true_lambda(self) -> float:
        return sum(part.true_lambda for part in self.parts)

    @property
    def name(self) -> str:
        return "sum(" + "+".join(part.name for part in self.parts) + ")"

    def potential(self, w: Any) -> Any:
        value = None
        for part, (a, b) in zip(self.parts, self._slices):
            term = part.potential(w[..., a:b])
            value = term if value is None else value + term
        return value

    def potential_grad(self, w: Any) -> Any:
        xp = namespace(w)
        return xp.concat(
            [part.potential_grad(w[..., a:b]) for part, (a, b) in zip(self.parts, self._slices)],
            axis=-1,
        )

    def exact_expectation(self, nbeta: float, localization: float, *, resolution: int = 1) -> float:
        """Sum of the parts' :meth:`~Potential.exact_expectation` (the posterior factorises)."""
        return sum(
            part.exact_expectation(nbeta, localization, resolution=resolution)
            for part in self.parts
        )

    def _repr_fields(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"SumOfPotentials({', '.join(map(repr, self.parts))})"
