"""Closed-form learning coefficients of reduced-rank regression and deep linear networks.

These are the ground-truth values λ that estimates are tested against (docs/design.md §3). Both
functions are pure integer arithmetic (``fractions.Fraction``) converted to ``float`` at the
end, so every value is exact (all results are multiples of 1/8 for RRR and of 1/(4ℓ) for DLNs).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["rrr_lambda", "dln_lambda"]


def _as_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum``; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be an integer, got {value!r}")
    try:
        integer = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"`{name}` must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if integer < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {integer}")
    return integer


def rrr_lambda(M: int, H: int, N: int, r: int) -> float:
    r"""Learning coefficient of reduced-rank regression (Aoyagi & Watanabe 2005).

    The model is :math:`y = BAx` with :math:`A \in \mathbb{R}^{H\times M}`,
    :math:`B \in \mathbb{R}^{N\times H}` (input dimension ``M``, hidden width ``H``, output
    dimension ``N``) and the true product :math:`B_0A_0` of rank ``r``.

    Parameters
    ----------
    M, H, N : int
        Input dimension, inner (hidden) dimension and output dimension, all ``>= 1``.
    r : int
        Rank of the true product, ``0 <= r <= min(M, H, N)``.

    Returns
    -------
    float
        The learning coefficient λ.

    Raises
    ------
    ValueError
        If an argument is not an integer in range; the message names it.

    Notes
    -----
    .. math::

        \lambda = \begin{cases}
        \dfrac{2(H+r)(M+N) - (M-N)^2 - (H+r)^2 + \epsilon}{8}
            & N+r \le M+H,\ M+r \le N+H,\ H+r \le M+N, \\[4pt]
        \dfrac{HM - Hr + Nr}{2} & M + H < N + r, \\[4pt]
        \dfrac{HN - Hr + Mr}{2} & N + H < M + r, \\[4pt]
        \dfrac{MN}{2} & M + N < H + r,
        \end{cases}

    with :math:`\epsilon = 1` when :math:`M+H+N+r` is odd and 0 when it is even (the "+1/8
    when odd" term; this convention reproduces all the worked values below).

    References
    ----------
    M. Aoyagi and S. Watanabe, "Stochastic complexities of reduced rank regression in
    Bayesian estimation", Neural Networks 18(7):924-933, 2005.

    Examples
    --------
    >>> rrr_lambda(5, 3, 5, 0), rrr_lambda(5, 4, 5, 0), rrr_lambda(5, 3, 5, 2)
    (6.5, 8.0, 9.5)
    >>> rrr_lambda(4, 3, 8, 0), rrr_lambda(8, 3, 4, 0), rrr_lambda(3, 8, 4, 0)
    (6.0, 6.0, 6.0)
    """
    M = _as_int(M, "M", minimum=1)
    H = _as_int(H, "H", minimum=1)
    N = _as_int(N, "N", minimum=1)
    r = _as_int(r, "r", minimum=0)
    if r > min(M, H, N):
        raise ValueError(f"`r` must be <= min(M, H, N) = {min(M, H, N)}, got {r}")
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        numerator = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        if (M + H + N + r) % 2 == 1:
            numerator += 1
        return float(Fraction(numerator, 8))
    if M + H < N + r:
        return float(Fraction(H * M - H * r + N * r, 2))
    if N + H < M + r:
        return float(Fraction(H * N - H * r + M * r, 2))
    return float(Fraction(M * N, 2))  # M + N < H + r


def dln_lambda(widths: Sequence[int], r: int) -> float:
    r"""Learning coefficient of a deep linear network (Aoyagi 2024, Theorem 1).

    The model is :math:`y = W_L \cdots W_1 x` with :math:`W_s \in \mathbb{R}^{H_s \times
    H_{s-1}}`; ``widths`` is :math:`(H_0, \dots, H_L)` (input first, output last) and the
    true product has rank ``r``.

    Parameters
    ----------
    widths : sequence of int
        :math:`(H_0, H_1, \dots, H_L)`, at least two entries (``L >= 1`` layers), all ``>= 1``.
    r : int
        Rank of the true product, ``0 <= r <= min(widths)``.

    Returns
    -------
    float
        The learning coefficient λ.

    Raises
    ------
    ValueError
        If an argument is malformed or out of range; the message names it.

    Notes
    -----
    Let :math:`\Delta_s = H_s - r`. Let :math:`\Sigma \subset \{0, \dots, L\}` with
    :math:`|\Sigma| = \ell + 1` be the unique set of indices of the :math:`\ell + 1`
    smallest :math:`\Delta` such that

    .. math::

        \max_{s\in\Sigma}\Delta_s < \min_{k\notin\Sigma}\Delta_k, \qquad
        \sum_{s\in\Sigma}\Delta_s \ge \ell \max_{s\in\Sigma}\Delta_s, \qquad
        \sum_{s\in\Sigma}\Delta_s < \ell \min_{k\notin\Sigma}\Delta_k

    (the conditions on the complement are void when :math:`\Sigma` is everything). With
    :math:`S = \sum_{s\in\Sigma}\Delta_s` and :math:`a = S - (\lceil S/\ell\rceil - 1)\ell`,

    .. math::

        \lambda = \frac{-r^2 + r(H_0 + H_L)}{2} + \frac{a(\ell - a)}{4\ell}
                  - \frac{(\ell - 1) S^2}{4\ell}
                  + \frac12 \sum_{i<j \in \Sigma} \Delta_i \Delta_j .

    For ``L = 2`` this is :func:`rrr_lambda` ``(H_0, H_1, H_2, r)``; for ``L = 1`` (a single
    matrix, a regular model) it is :math:`H_0 H_1 / 2` whatever ``r``.

    References
    ----------
    M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks
    with linear units", Neural Networks 172:106132, 2024.

    Examples
    --------
    >>> dln_lambda((10, 10, 10, 10), 0), dln_lambda((10, 10, 10, 10), 3)
    (33.5, 42.0)
    >>> dln_lambda((4, 6, 2, 6, 4), 1), dln_lambda((100, 100, 100), 0)
    (5.0, 3750.0)
    >>> dln_lambda((455, 395, 125, 350, 277, 261, 297), 28)
    20546.5
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        try:
            widths = list(widths)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                f"`widths` must be a sequence of integers, got {type(widths).__name__}"
            ) from None
    if len(widths) < 2:
        raise ValueError(
            f"`widths` needs at least 2 entries (input and output width), got {len(widths)}"
        )
    H = [_as_int(width, f"widths[{index}]", minimum=1) for index, width in enumerate(widths)]
    r = _as_int(r, "r", minimum=0)
    if r > min(H):
        raise ValueError(f"`r` must be <= min(widths) = {min(H)}, got {r}")
    L = len(H) - 1
    delta = sorted(h - r for h in H)
    for ell in range(1, L + 1):
        inside, outside = delta[: ell + 1], delta[ell + 1 :]
        S = sum(inside)
        if S < ell * inside[-1]:
            continue
        if outside and not (inside[-1] < outside[0] and S < ell * outside[0]):
            continue
        break
    else:  # pragma: no cover - Aoyagi (2024) proves that the set exists
        raise RuntimeError(f"no index set Σ found for widths={tuple(H)}, r={r}")
    a = S - (-(-S // ell) - 1) * ell
    pairs = sum(inside[i] * inside[j] for i in range(len(inside)) for j in range(i))
    value = (
        Fraction(-r * r + r * (H[0] + H[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction((ell - 1) * S * S, 4 * ell)
        + Fraction(pairs, 2)
    )
    return float(value)
