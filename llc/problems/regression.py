r"""Gaussian linear regression problems with a known learning coefficient.

All three models are :math:`y = C(w)\,x + \sigma\varepsilon` with :math:`x \sim N(0, I)`,
:math:`\varepsilon \sim N(0, I)` and a fixed teacher, and share the loss

.. math::

    L_n(w) = \frac{1}{2\sigma^2 n} \sum_{i=1}^n \lVert y_i - C(w)\,x_i \rVert^2

(the mean per-sample Gaussian negative log-likelihood without its constant). They differ in
how :math:`C(w)` is parametrised: one matrix (regular), a product of two (reduced-rank
regression) or of ``L`` (deep linear network).

The teacher is drawn once per problem from ``teacher_seed``; :meth:`sample_data` draws
``x`` and the noise from its own ``seed``, so different seeds are independent datasets from
the same true distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import Problem, check_n, check_seed, first_leaf, namespace
from ._truth import _as_int, dln_lambda, rrr_lambda

__all__ = ["LinearRegression", "ReducedRankRegression", "DeepLinearNetwork"]

_TEACHER_STREAM = 0x7EAC4E5  # separates teacher draws from data draws with the same seed


def _check_noise_std(noise_std: float) -> float:
    value = float(noise_std)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`noise_std` must be a positive finite number, got {noise_std!r}")
    return value


def _orthonormal_columns(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns, Haar-distributed."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _rank_r_teacher(
    teacher_seed: int, out_features: int, in_features: int, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, Vt)`` of a rank-``rank`` teacher ``U diag(s) Vt``, singular values in [1, 2]."""
    rng = np.random.default_rng([_TEACHER_STREAM, teacher_seed])
    U = _orthonormal_columns(rng, out_features, rank)
    V = _orthonormal_columns(rng, in_features, rank)
    s = np.sort(rng.uniform(1.0, 2.0, size=rank))[::-1].copy()
    return U, s, V.T.copy()


def _pad(block: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``block`` in the top-left corner of a zero matrix of ``shape``."""
    out = np.zeros(shape)
    out[: block.shape[0], : block.shape[1]] = block
    return out


def _check_regression_data(
    data: tuple[np.ndarray, ...], in_features: int, out_features: int
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, tuple) or len(data) < 2:
        raise ValueError("`data` must be the tuple (x, y) returned by sample_data")
    x = np.asarray(data[0], dtype=np.float64)
    y = np.asarray(data[1], dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"`data[0]` (x) must have shape (n, {in_features}), got {x.shape}")
    if y.shape != (x.shape[0], out_features):
        raise ValueError(
            f"`data[1]` (y) must have shape ({x.shape[0]}, {out_features}), got {y.shape}"
        )
    if x.shape[0] < in_features:
        raise ValueError(
            f"the minimiser needs n >= in_features = {in_features} samples (an invertible "
            f"x covariance), got n = {x.shape[0]}"
        )
    return x, y


def _whitened_svd(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(U, S, Vt_white)`` with :math:`C_{ols} = U\,\mathrm{diag}(S)\,Vt_{white}`.

    :math:`\Sigma_{xx} = x^\top x/n`, :math:`\Sigma_{yx} = y^\top x/n`,
    :math:`C_{ols}\Sigma_{xx}^{1/2} = \Sigma_{yx}\Sigma_{xx}^{-1/2} = U S V^\top` and
    ``Vt_white`` :math:`= V^\top\Sigma_{xx}^{-1/2}`; truncating to the first ``r`` triples
    gives the rank-``r`` minimiser of :math:`L_n` (Eckart–Young in the whitened metric).
    """
    n = x.shape[0]
    sxx = x.T @ x / n
    syx = y.T @ x / n
    evals, evecs = np.linalg.eigh(sxx)
    if evals[0] <= evals[-1] * 1e-12:
        raise ValueError("the minimiser needs x with full column rank (invertible covariance)")
    inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
    U, S, Vt = np.linalg.svd(syx @ inv_sqrt, full_matrices=False)
    return U, S, Vt @ inv_sqrt


def _chain_loss_and_grad(
    weights: list[Any], x: Any, y: Any, noise_std: float, *, want_grad: bool
) -> tuple[Any, list[Any] | None]:
    """Loss of ``y ≈ W_L ⋯ W_1 x`` (rows of ``x``) and, optionally, the gradients (backprop)."""
    xp = namespace(weights[0])
    n = x.shape[0]
    activations = [x]
    h = x
    for W in weights:
        h = xp.matmul(h, xp.matrix_transpose(W))
        activations.append(h)
    residual = y - h
    loss = xp.sum(residual * residual) / (2.0 * noise_std**2 * n)
    if not want_grad:
        return loss, None
    delta = residual * (-1.0 / (noise_std**2 * n))  # dL/d(prediction), shape (n, H_L)
    grads: list[Any] = [None] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        grads[k] = xp.matmul(xp.matrix_transpose(delta), activations[k])
        if k > 0:
            delta = xp.matmul(delta, weights[k])
    return loss, grads


class _GaussianRegression(Problem):
    """Shared parts: teacher, data sampling, loss by backprop through a chain of matrices."""

    in_features: int
    out_features: int
    noise_std: float
    teacher_seed: int

    def __init__(self, in_features: int, out_features: int, noise_std: float, teacher_seed: int):
        self.in_features = in_features
        self.out_features = out_features
        self.noise_std = _check_noise_std(noise_std)
        self.teacher_seed = _as_int(teacher_seed, "teacher_seed", minimum=0)

    _teacher_matrix: np.ndarray  # set by each subclass's constructor
    _teacher_params: dict[str, np.ndarray]

    # subclasses: parameter names in chain order (first applied to x first)
    def _names(self) -> list[str]:
        return list(self.param_shapes)

    @property
    def teacher_matrix(self) -> np.ndarray:
        """The true map :math:`C_0` (``out_features x in_features``)."""
        return self._teacher_matrix.copy()

    @property
    def teacher(self) -> dict[str, np.ndarray]:
        """Parameters whose product is the true map :math:`C_0`."""
        return {key: value.copy() for key, value in self._teacher_params.items()}

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes.values())

    def sample_data(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: ``x`` of shape ``(n, in_features)``, ``y`` of ``(n, out_features)``."""
        n, seed = check_n(n), check_seed(seed)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, self.in_features))
        noise = rng.standard_normal((n, self.out_features))
        y = x @ self._teacher_matrix.T + self.noise_std * noise
        return x, y

    def _weights(self, params: dict[str, Any]) -> list[Any]:
        try:
            return [params[key] for key in self._names()]
        except KeyError as error:
            raise KeyError(
                f"`params` lacks {error.args[0]!r}; expected keys {self._names()}"
            ) from None

    def loss(self, params: dict[str, Any], batch: tuple[Any, ...]) -> Any:
        first_leaf(params)
        loss, _ = _chain_loss_and_grad(
            self._weights(params), batch[0], batch[1], self.noise_std, want_grad=False
        )
        return loss

    def loss_and_grad(
        self, params: dict[str, Any], batch: tuple[Any, ...]
    ) -> tuple[Any, dict[str, Any]]:
        first_leaf(params)
        loss, grads = _chain_loss_and_grad(
            self._weights(params), batch[0], batch[1], self.noise_std, want_grad=True
        )
        assert grads is not None
        return loss, dict(zip(self._names(), grads))

    def _repr_fields(self) -> dict[str, Any]:
        return {"noise_std": self.noise_std, "teacher_seed": self.teacher_seed}


class LinearRegression(_GaussianRegression):
    r"""Linear regression :math:`y = Wx + \sigma\varepsilon`: a regular model.

    Parameters
    ----------
    in_features, out_features : int
        Dimensions of ``x`` and ``y``.
    noise_std : float, default 1.0
        σ, the noise standard deviation (also the likelihood's).
    teacher_seed : int, default 0
        Seed of the teacher :math:`W_0`, whose entries are i.i.d. :math:`N(0, 1)`.

    Notes
    -----
    Params: ``{"weight": (out_features, in_features)}``. Loss:
    :math:`L_n(W) = \frac{1}{2\sigma^2 n}\sum_i \lVert y_i - W x_i\rVert^2`.
    The model is regular, so :math:`\lambda = d/2` with :math:`d` = ``in_features *
    out_features``, at every parameter. :meth:`minimizer` is the ordinary least-squares
    estimate on the given data (the exact minimiser of :math:`L_n`).
    """

    def __init__(
        self, in_features: int, out_features: int, noise_std: float = 1.0, teacher_seed: int = 0
    ):
        super().__init__(
            _as_int(in_features, "in_features", minimum=1),
            _as_int(out_features, "out_features", minimum=1),
            noise_std,
            teacher_seed,
        )
        rng = np.random.default_rng([_TEACHER_STREAM, self.teacher_seed])
        self._teacher_matrix = rng.standard_normal((self.out_features, self.in_features))
        self._teacher_params = {"weight": self._teacher_matrix}

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features)}

    @property
    def true_lambda(self) -> float:
        return self.in_features * self.out_features / 2

    @property
    def name(self) -> str:
        return f"linear_regression_{self.in_features}x{self.out_features}"

    def minimizer(self, data: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """The ordinary least-squares estimate ``{"weight": W_ols}``."""
        x, y = _check_regression_data(data, self.in_features, self.out_features)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return {"weight": np.ascontiguousarray(coef.T)}

    def _repr_fields(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            **super()._repr_fields(),
        }


class ReducedRankRegression(_GaussianRegression):
    r"""Reduced-rank regression :math:`y = BAx + \sigma\varepsilon` (Aoyagi & Watanabe 2005).

    Parameters
    ----------
    M : int
        Input dimension (``x`` has ``M`` features).
    H : int
        Inner dimension: :math:`A \in \mathbb{R}^{H\times M}`, :math:`B \in
        \mathbb{R}^{N\times H}`.
    N : int
        Output dimension.
    rank : int
        Rank ``r`` of the teacher :math:`B_0A_0`, ``0 <= rank <= min(M, H, N)``. Its nonzero
        singular values are drawn uniformly from [1, 2], well away from 0.
    noise_std : float, default 1.0
        σ, the noise standard deviation (also the likelihood's).
    teacher_seed : int, default 0
        Seed of the teacher's singular vectors and values.

    Notes
    -----
    Params: ``{"A": (H, M), "B": (N, H)}``. The learning coefficient is
    :func:`~llc.problems.rrr_lambda` ``(M, H, N, r)``:

    .. math::

        \lambda = \begin{cases}
        [2(H+r)(M+N) - (M-N)^2 - (H+r)^2 + \epsilon]/8
            & N+r \le M+H,\ M+r \le N+H,\ H+r \le M+N, \\
        (HM - Hr + Nr)/2 & M + H < N + r, \\
        (HN - Hr + Mr)/2 & N + H < M + r, \\
        MN/2 & M + N < H + r,
        \end{cases}

    with :math:`\epsilon = 1` if :math:`M+H+N+r` is odd, else 0.

    :meth:`minimizer` returns the classical reduced-rank regression estimator: with
    :math:`\Sigma_{xx} = x^\top x/n`, :math:`\Sigma_{yx} = y^\top x/n` and the SVD
    :math:`\Sigma_{yx}\Sigma_{xx}^{-1/2} = USV^\top` (that is, :math:`C_{ols}
    \Sigma_{xx}^{1/2}`), the rank-``r`` minimiser of :math:`L_n` is :math:`C_r = U_r S_r
    V_r^\top\Sigma_{xx}^{-1/2}`, factored as :math:`B = [U_rS_r^{1/2}, 0]`,
    :math:`A = [S_r^{1/2}V_r^\top\Sigma_{xx}^{-1/2}; 0]` (zero padding up to ``H``). It
    minimises :math:`L_n` over all :math:`(A, B)` whose product has rank :math:`\le r`, and it is
    an exact critical point of :math:`L_n` over *all* :math:`(A, B)`: the residual gradient
    :math:`(C_r - C_{ols})\Sigma_{xx} \propto U_\perp S_\perp V_\perp^\top\Sigma_{xx}^{1/2}`
    is annihilated by :math:`B^\top` on the left and by :math:`A^\top` on the right. For
    ``r < min(H, M, N)`` it is a saddle, not the global minimum of :math:`L_n` (which has
    rank ``min(M, H, N)``), and λ above is the learning coefficient of the true rank-``r``
    stratum that this point estimates.

    References
    ----------
    M. Aoyagi and S. Watanabe, "Stochastic complexities of reduced rank regression in
    Bayesian estimation", Neural Networks 18(7):924-933, 2005.
    """

    def __init__(
        self,
        M: int,
        H: int,
        N: int,
        rank: int,
        noise_std: float = 1.0,
        teacher_seed: int = 0,
    ):
        self.M = _as_int(M, "M", minimum=1)
        self.H = _as_int(H, "H", minimum=1)
        self.N = _as_int(N, "N", minimum=1)
        self.rank = _as_int(rank, "rank", minimum=0)
        if self.rank > min(self.M, self.H, self.N):
            raise ValueError(
                f"`rank` must be <= min(M, H, N) = {min(self.M, self.H, self.N)}, got {self.rank}"
            )
        super().__init__(self.M, self.N, noise_std, teacher_seed)
        U, s, Vt = _rank_r_teacher(self.teacher_seed, self.N, self.M, self.rank)
        root = np.sqrt(s)
        self._teacher_matrix = (U * s) @ Vt
        self._teacher_params = {
            "A": _pad(root[:, None] * Vt, (self.H, self.M)),
            "B": _pad(U * root, (self.N, self.H)),
        }

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"A": (self.H, self.M), "B": (self.N, self.H)}

    @property
    def true_lambda(self) -> float:
        return rrr_lambda(self.M, self.H, self.N, self.rank)

    @property
    def name(self) -> str:
        return f"rrr_M{self.M}_H{self.H}_N{self.N}_r{self.rank}"

    def minimizer(self, data: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """The rank-``rank`` reduced-rank regression estimate, balanced ``{"A", "B"}``."""
        x, y = _check_regression_data(data, self.M, self.N)
        U, S, Vt_white = _whitened_svd(x, y)
        r = self.rank
        root = np.sqrt(S[:r])
        return {
            "A": _pad(root[:, None] * Vt_white[:r], (self.H, self.M)),
            "B": _pad(U[:, :r] * root, (self.N, self.H)),
        }

    def _repr_fields(self) -> dict[str, Any]:
        return {"M": self.M, "H": self.H, "N": self.N, "rank": self.rank, **super()._repr_fields()}


class DeepLinearNetwork(_GaussianRegression):
    r"""Deep linear network :math:`y = W_L \cdots W_1 x + \sigma\varepsilon` (Aoyagi 2024).

    Parameters
    ----------
    widths : sequence of int
        :math:`(H_0, H_1, \dots, H_L)`: input width first, output width last; ``L >= 1``
        layers with :math:`W_s \in \mathbb{R}^{H_s\times H_{s-1}}`.
    rank : int
        Rank ``r`` of the teacher product, ``0 <= rank <= min(widths)``; its nonzero singular
        values are drawn uniformly from [1, 2].
    noise_std : float, default 1.0
        σ, the noise standard deviation (also the likelihood's).
    teacher_seed : int, default 0
        Seed of the teacher's singular vectors and values.

    Notes
    -----
    Params: ``{"W1": (H_1, H_0), ..., "WL": (H_L, H_{L-1})}``. The learning coefficient is
    :func:`~llc.problems.dln_lambda` ``(widths, r)`` (Aoyagi 2024, Theorem 1): with
    :math:`\Delta_s = H_s - r`, :math:`\Sigma` the indices of the :math:`\ell+1` smallest
    :math:`\Delta` satisfying the theorem's conditions, :math:`S = \sum_\Sigma\Delta_s` and
    :math:`a = S - (\lceil S/\ell\rceil - 1)\ell`,

    .. math::

        \lambda = \frac{-r^2 + r(H_0 + H_L)}{2} + \frac{a(\ell - a)}{4\ell}
                  - \frac{(\ell - 1)S^2}{4\ell} + \frac12\sum_{i<j\in\Sigma}\Delta_i\Delta_j.

    :meth:`minimizer` returns the reduced-rank estimate :math:`C_r = U_rS_rV_r^\top
    \Sigma_{xx}^{-1/2}` (see :class:`ReducedRankRegression`) factored with
    :math:`S_r^{1/L}` on every layer: :math:`W_1 = [S_r^{1/L}V_r^\top\Sigma_{xx}^{-1/2}; 0]`,
    :math:`W_s = \mathrm{diag}(S_r^{1/L}, 0)` for :math:`1 < s < L`, :math:`W_L =
    [U_rS_r^{1/L}, 0]`, zero-padded. For ``L >= 2`` this is an exact critical point of
    :math:`L_n` (every layer's gradient vanishes, for the reason given in
    :class:`ReducedRankRegression`) on the true rank-``r`` stratum to which λ refers. For
    ``L = 1`` the model is a single unconstrained matrix, regular with
    :math:`\lambda = H_0H_1/2` whatever ``r``, and the minimiser is the ordinary least-squares
    estimate.

    References
    ----------
    M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks
    with linear units", Neural Networks 172:106132, 2024.
    """

    def __init__(
        self,
        widths: Sequence[int],
        rank: int,
        noise_std: float = 1.0,
        teacher_seed: int = 0,
    ):
        try:
            widths = list(widths)
        except TypeError:
            raise ValueError(f"`widths` must be a sequence of integers, got {widths!r}") from None
        if len(widths) < 2:
            raise ValueError(
                f"`widths` needs at least 2 entries (input and output), got {len(widths)}"
            )
        self.widths = tuple(_as_int(w, f"widths[{i}]", minimum=1) for i, w in enumerate(widths))
        self.rank = _as_int(rank, "rank", minimum=0)
        if self.rank > min(self.widths):
            raise ValueError(f"`rank` must be <= min(widths) = {min(self.widths)}, got {self.rank}")
        super().__init__(self.widths[0], self.widths[-1], noise_std, teacher_seed)
        U, s, Vt = _rank_r_teacher(self.teacher_seed, self.widths[-1], self.widths[0], self.rank)
        self._teacher_matrix = (U * s) @ Vt
        self._teacher_params = self._balanced(U, s, Vt)

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.widths) - 1

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"W{s}": (self.widths[s], self.widths[s - 1]) for s in range(1, self.depth + 1)}

    @property
    def true_lambda(self) -> float:
        return dln_lambda(self.widths, self.rank)

    @property
    def name(self) -> str:
        return f"dln_{'-'.join(map(str, self.widths))}_r{self.rank}"

    def _balanced(self, U: np.ndarray, s: np.ndarray, Vt: np.ndarray) -> dict[str, np.ndarray]:
        """``U diag(s) Vt`` as ``W_L ⋯ W_1``, ``s**(1/L)`` on each layer, zero-padded."""
        L, shapes = self.depth, list(self.param_shapes.items())
        if L == 1:
            return {"W1": (U * s) @ Vt}
        root = s ** (1.0 / L)
        params = {}
        for index, (key, shape) in enumerate(shapes):
            if index == 0:
                block = root[:, None] * Vt
            elif index == L - 1:
                block = U * root
            else:
                block = np.diag(root)
            params[key] = _pad(block, shape)
        return params

    def minimizer(self, data: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """Balanced rank-``rank`` reduced-rank estimate (OLS when ``L = 1``)."""
        x, y = _check_regression_data(data, self.widths[0], self.widths[-1])
        if self.depth == 1:
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            return {"W1": np.ascontiguousarray(coef.T)}
        U, S, Vt_white = _whitened_svd(x, y)
        r = self.rank
        return self._balanced(U[:, :r], S[:r], Vt_white[:r])

    def _repr_fields(self) -> dict[str, Any]:
        return {"widths": self.widths, "rank": self.rank, **super()._repr_fields()}
