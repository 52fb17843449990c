"""λ̂ along training: :func:`estimate_trajectory` and its :class:`TrajectoryResult`.

``llc.estimate_trajectory(checkpoints, loss_fn, data, steps=...)`` calls :func:`llc.estimate`
once per checkpoint with the same settings **and the same seed**, so the chains at every
checkpoint draw the same random numbers and the differences between checkpoints are not seed
noise. The result holds one :class:`~llc.LLCResult` per checkpoint, the per-checkpoint
numbers as arrays, one ArviZ ``DataTree`` with a ``checkpoint`` dimension, a table, a plot,
and :meth:`TrajectoryResult.jumps`, the training steps at which λ̂ changed abruptly by the
rule of :func:`abrupt_changes`.

Failures: by default (``on_error="record"``) a checkpoint whose estimate raises is recorded
(``status`` ``"failed"``, its error message kept, λ̂ NaN) and the others go on; with
``on_error="raise"`` the first failure raises :class:`TrajectoryError`, whose ``result``
holds every checkpoint finished before it. A ``KeyboardInterrupt`` ends the trajectory and
returns the checkpoints done so far. No finished checkpoint is ever lost.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._drawing import draw
from ._estimate import estimate
from ._sweep import sweep
from .diagnostics import Finding
from .result import IncompleteRunWarning, LLCResult, _netcdf_attrs, mala_acceptance_per_draw

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["JUMP_RELATIVE", "JUMP_Z", "TrajectoryError", "TrajectoryResult", "abrupt_changes",
           "estimate_trajectory"]

#: Default number of combined standard errors a change of λ̂ must exceed to be abrupt.
JUMP_Z = 4.0
#: Default fraction of the larger |λ̂| of the pair a change must also exceed to be abrupt.
JUMP_RELATIVE = 0.1

DONE, FAILED, NOT_RUN = "done", "failed", "not run"

#: Per-checkpoint numbers written as data variables over ``checkpoint`` (root of the tree).
_STATISTICS = ("llc_mean", "llc_std", "llc_mcse", "ess_bulk", "ess_tail", "rhat",
               "mala_acceptance", "init_loss", "init_grad_norm", "elapsed_seconds")
_GROUPS = ("posterior", "sample_stats", "warmup_posterior", "parameters")
# Root attributes LLCResult.to_arviz writes besides the settings: kept per checkpoint.
_PER_RESULT_ATTRS = ("elapsed_seconds", "failed_chains", "chain_errors", "findings")


class TrajectoryError(RuntimeError):
    """A checkpoint failed under ``on_error="raise"``.

    Attributes
    ----------
    result
        The :class:`TrajectoryResult` of every checkpoint finished before the failure (the
        failed one has status ``"failed"``, later ones ``"not run"``): no work is lost.
    checkpoint
        Index of the checkpoint that failed.
    """

    def __init__(self, message: str, result: TrajectoryResult, checkpoint: int) -> None:
        super().__init__(message)
        self.result = result
        self.checkpoint = checkpoint


# ---- the rule for an abrupt change ----------------------------------------------------------
def abrupt_changes(values: Any, standard_errors: Any, *, z: float = JUMP_Z,
                   relative: float = JUMP_RELATIVE) -> np.ndarray:
    r"""Which values changed abruptly from the previous one: the rule behind ``jumps()``.

    Checkpoint i (i ≥ 1) is marked when its value :math:`\hat\lambda_i` differs from that of
    the previous checkpoint with a finite value and standard error, :math:`\hat\lambda_j`, by

    .. math::

        |\hat\lambda_i - \hat\lambda_j| > z\,\sqrt{s_i^2 + s_j^2}
        \quad\text{and}\quad
        |\hat\lambda_i - \hat\lambda_j| > r\,\max(|\hat\lambda_i|, |\hat\lambda_j|),

    with :math:`s` the standard errors (the MCSE of each λ̂). The first condition says the
    change is not Monte Carlo noise: the two estimates are treated as independent, which is
    conservative, because the same seed at every checkpoint makes their errors positively
    correlated. The second says it is large on the scale of λ̂ itself (a 10 % change by
    default), so that a long, precise run does not report every small drift of a plateau.
    Checkpoints with a NaN value or standard error (failed, not run) are skipped: the next
    finite one is compared with the last finite one before them.

    Parameters
    ----------
    values
        λ̂ per checkpoint, in training order.
    standard_errors
        Standard error of each value (non-negative).
    z
        Combined standard errors the change must exceed (default 4: a false alarm on pure
        noise has probability about 6e-5 per pair of independent normal estimates).
    relative
        Fraction of the larger absolute value of the pair the change must exceed
        (default 0.1); ``0`` keeps the statistical condition alone.

    Returns
    -------
    numpy.ndarray
        Boolean, one per value; ``True`` where the value jumped from its predecessor (never
        for the first finite value).

    Raises
    ------
    ValueError
        If the arrays are not one-dimensional of equal length, a standard error is negative,
        or ``z`` or ``relative`` is negative or not finite.
    """
    values = np.asarray(values, dtype=float)
    errors = np.asarray(standard_errors, dtype=float)
    if values.ndim != 1 or errors.shape != values.shape:
        raise ValueError(f"`values` and `standard_errors` must be 1-D of equal length; got "
                         f"shapes {values.shape} and {errors.shape}")
    if np.any(errors < 0):
        raise ValueError("`standard_errors` must be >= 0")
    for name, number in (("z", z), ("relative", relative)):
        if isinstance(number, bool) or not isinstance(number, numbers.Real) \
                or not math.isfinite(number) or number < 0:
            raise ValueError(f"`{name}` must be a finite number >= 0; got {number!r}")
    marked = np.zeros(values.shape, dtype=bool)
    previous = None
    for index in range(values.size):
        if not (np.isfinite(values[index]) and np.isfinite(errors[index])):
            continue
        if previous is not None:
            change = abs(values[index] - values[previous])
            noise = math.hypot(errors[index], errors[previous])
            scale = max(abs(values[index]), abs(values[previous]))
            marked[index] = change > z * noise and change > relative * scale
        previous = index
    return marked


# ---- the result -----------------------------------------------------------------------------
@dataclass
class TrajectoryResult:
    """λ̂ at a sequence of training checkpoints (what :func:`estimate_trajectory` returns).

    Attributes
    ----------
    steps
        Training step of each checkpoint, strictly increasing (int64, or float64 when the
        steps given were not whole numbers).
    results
        One :class:`~llc.LLCResult` per checkpoint; ``None`` where the estimate failed or
        was not run.
    errors
        Per checkpoint, ``"ExceptionType: message"`` of a failed estimate, else ``""``.
    status
        Per checkpoint: ``"done"``, ``"failed"`` or ``"not run"`` (after an interrupt or
        under ``on_error="raise"``).
    attrs
        The settings shared by every checkpoint (backend, nβ, γ, sampler, seed, ...): the
        attributes equal in all finished results.
    elapsed
        Wall-clock seconds of the whole trajectory.
    """

    steps: np.ndarray
    results: list[LLCResult | None]
    errors: list[str]
    status: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    elapsed: float = float("nan")
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps)
        count = len(self.steps)
        if not (len(self.results) == len(self.errors) == len(self.status) == count):
            raise ValueError("`steps`, `results`, `errors` and `status` must have one entry "
                             "per checkpoint")

    # ---- container -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> LLCResult | None:
        """The :class:`~llc.LLCResult` of checkpoint ``index`` (``None`` if none)."""
        return self.results[index]

    @property
    def complete(self) -> bool:
        """True when every checkpoint ran (done or failed) and no estimate was interrupted."""
        return all(state != NOT_RUN for state in self.status) and all(
            result.complete for result in self.results if result is not None)

    @property
    def failed(self) -> np.ndarray:
        """Boolean per checkpoint: the estimate raised (see :attr:`errors`)."""
        return np.array([state == FAILED for state in self.status], dtype=bool)

    # ---- per-checkpoint numbers ----------------------------------------------------------
    def _per_checkpoint(self, name: str, compute: Callable[[LLCResult], float]) -> np.ndarray:
        if name not in self._cache:
            values = np.full(len(self), np.nan)
            for index, result in enumerate(self.results):
                if result is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        try:
                            values[index] = float(compute(result))
                        except Exception:  # noqa: BLE001 - undefined for this result (one chain, ...)
                            values[index] = np.nan
            self._cache[name] = values
        return self._cache[name].copy()

    @property
    def llc_mean(self) -> np.ndarray:
        """λ̂ per checkpoint (NaN where none)."""
        return self._per_checkpoint("llc_mean", lambda r: r.llc_mean)

    @property
    def llc_std(self) -> np.ndarray:
        """Standard deviation of the chain means per checkpoint."""
        return self._per_checkpoint("llc_std", lambda r: r.llc_std)

    @property
    def llc_mcse(self) -> np.ndarray:
        """Monte Carlo standard error of λ̂ per checkpoint (from the bulk ESS)."""
        return self._per_checkpoint("llc_mcse", lambda r: r.llc_mcse)

    @property
    def ess_bulk(self) -> np.ndarray:
        """Bulk ESS of the llc trace per checkpoint."""
        return self._per_checkpoint("ess_bulk", lambda r: r.ess_bulk)

    @property
    def ess_tail(self) -> np.ndarray:
        """Tail ESS of the llc trace per checkpoint."""
        return self._per_checkpoint("ess_tail", lambda r: r.ess_tail)

    @property
    def rhat(self) -> np.ndarray:
        """R-hat of the llc trace per checkpoint."""
        return self._per_checkpoint("rhat", lambda r: r.rhat)

    @property
    def mala_acceptance(self) -> np.ndarray:
        """Mean MALA acceptance per checkpoint."""
        return self._per_checkpoint("mala_acceptance", lambda r: r.mala_acceptance)

    @property
    def init_loss(self) -> np.ndarray:
        """L_n(w*) per checkpoint: the loss of the checkpoint on ``data``."""
        return self._per_checkpoint("init_loss", lambda r: r.init_loss)

    @property
    def init_grad_norm(self) -> np.ndarray:
        """‖∇L_n(w*)‖ per checkpoint (large where training was moving fast)."""
        return self._per_checkpoint(
            "init_grad_norm", lambda r: r.attrs.get("init_grad_norm", float("nan")))

    @property
    def elapsed_seconds(self) -> np.ndarray:
        """Wall-clock seconds of each checkpoint's estimate."""
        return self._per_checkpoint("elapsed_seconds", lambda r: r.elapsed)

    @property
    def findings(self) -> list[list[Finding]]:
        """The health findings of each checkpoint (empty list for a healthy or missing one)."""
        return [list(result.findings) if result is not None else [] for result in self.results]

    # ---- abrupt changes ------------------------------------------------------------------
    def jump_mask(self, *, z: float = JUMP_Z, relative: float = JUMP_RELATIVE) -> np.ndarray:
        """Boolean per checkpoint: λ̂ jumped there from the previous finished checkpoint, by
        the rule of :func:`abrupt_changes` with the MCSE as standard error."""
        return abrupt_changes(self.llc_mean, self.llc_mcse, z=z, relative=relative)

    def jumps(self, *, z: float = JUMP_Z, relative: float = JUMP_RELATIVE) -> np.ndarray:
        """Training steps at which λ̂ changed abruptly (:func:`abrupt_changes`).

        Each returned step is that of the checkpoint *after* the change: λ̂ changed somewhere
        between the previous finished checkpoint and this one.

        Parameters
        ----------
        z
            Combined MCSEs the change must exceed (default 4).
        relative
            Fraction of the larger |λ̂| of the pair it must also exceed (default 0.1).

        Returns
        -------
        numpy.ndarray
            The steps, in order (empty if λ̂ never jumped).
        """
        return self.steps[self.jump_mask(z=z, relative=relative)]

    # ---- tables ---------------------------------------------------------------------------
    def summary(self, *, z: float = JUMP_Z, relative: float = JUMP_RELATIVE) -> pd.DataFrame:
        """One row per checkpoint, indexed by ``step``.

        Columns: ``checkpoint`` (index), ``status``, ``llc_mean``, ``llc_mcse``, ``llc_std``
        (spread of chain means), ``ess_bulk``, ``ess_tail``, ``r_hat``, ``mala_acceptance``,
        ``init_loss`` (L_n(w*)), ``init_grad_norm``, ``jump`` (λ̂ changed abruptly from the
        previous checkpoint, :meth:`jumps` with ``z`` and ``relative``), ``findings`` (the
        health-check codes) and ``error``.
        """
        import pandas as pd

        table = pd.DataFrame({
            "checkpoint": np.arange(len(self)),
            "status": self.status,
            "llc_mean": self.llc_mean,
            "llc_mcse": self.llc_mcse,
            "llc_std": self.llc_std,
            "ess_bulk": self.ess_bulk,
            "ess_tail": self.ess_tail,
            "r_hat": self.rhat,
            "mala_acceptance": self.mala_acceptance,
            "init_loss": self.init_loss,
            "init_grad_norm": self.init_grad_norm,
            "jump": self.jump_mask(z=z, relative=relative),
            "findings": [",".join(f.code for f in found) for found in self.findings],
            "error": self.errors,
        }, index=pd.Index(self.steps, name="step"))
        return table

    def report(self) -> str:
        """A readable table: step, λ̂ ± MCSE, L_n(w*), R-hat, findings; jumps marked ``*``."""
        jumps = self.jump_mask()
        means, mcse, loss, rhat = self.llc_mean, self.llc_mcse, self.init_loss, self.rhat
        lines = [(f"λ̂ at {len(self)} checkpoints ({sum(s == DONE for s in self.status)} done"
                  f", {int(self.failed.sum())} failed), {self.elapsed:.1f} s; "
                  "* = abrupt change from the previous checkpoint"),
                 f"{'step':>12}  {'λ̂':>10} {'± MCSE':>8}  {'L_n(w*)':>10}  {'R-hat':>6}  notes"]
        for index in range(len(self)):
            if self.status[index] != DONE:
                note = f"{self.status[index]}: {self.errors[index]}" if self.errors[index] \
                    else self.status[index]
                lines.append(f"{self.steps[index]:>12}  {'-':>10} {'':>8}  {'':>10}  {'':>6}  "
                             f"{note}")
                continue
            codes = ",".join(f.code for f in self.findings[index])
            lines.append(f"{self.steps[index]:>12}  {means[index]:>10.4g} {mcse[index]:>8.2g}"
                         f"  {loss[index]:>10.5g}  {rhat[index]:>6.3f}  "
                         f"{'*' if jumps[index] else ' '} {codes}".rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        done = sum(state == DONE for state in self.status)
        steps = (f"{self.steps[0]}..{self.steps[-1]}" if len(self) else "none")
        return (f"TrajectoryResult({len(self)} checkpoints, steps {steps}, {done} done, "
                f"{int(self.failed.sum())} failed, jumps at {self.jumps().tolist()})")

    # ---- export ---------------------------------------------------------------------------
    def to_arviz(self) -> xr.DataTree:
        """One ``xarray.DataTree`` in ArviZ's schema with a ``checkpoint`` dimension.

        - Root dataset: coordinates ``checkpoint`` (0, 1, ...) and ``step`` (the training step,
          along ``checkpoint``); data variables over ``checkpoint``: ``llc_mean``,
          ``llc_std``, ``llc_mcse``, ``ess_bulk``, ``ess_tail``, ``rhat``,
          ``mala_acceptance``, ``init_loss``, ``init_grad_norm``, ``elapsed_seconds``,
          ``jump``, ``status``, ``error``, ``findings``, ``failed_chains`` and
          ``chain_errors`` (JSON text), and every setting that differs between checkpoints.
          Root attributes: the settings shared by all checkpoints.
        - ``posterior`` (``llc``, ``loss`` over ``checkpoint, chain, draw``), ``sample_stats``
          and ``warmup_posterior`` as in :meth:`LLCResult.to_arviz`, stacked along
          ``checkpoint`` (NaN where a checkpoint has no draws), each with the ``step``
          coordinate; ``parameters`` when the draws were kept.
        """
        import xarray as xr

        count = len(self)
        coords = {"checkpoint": np.arange(count), "step": ("checkpoint", self.steps)}
        trees = [result.to_arviz() if result is not None else None for result in self.results]
        per_attrs = [None if tree is None else {str(k): _plain(v) for k, v in tree.attrs.items()}
                     for tree in trees]
        done = [attrs for attrs in per_attrs if attrs is not None]
        keys = sorted({key for attrs in done for key in attrs})
        shared = {key: done[0][key] for key in keys
                  if all(key in attrs and _same(attrs[key], done[0][key]) for attrs in done)
                  and key not in _PER_RESULT_ATTRS}
        varying = [key for key in keys if key not in shared]

        root: dict[str, Any] = {}
        for name in _STATISTICS:
            root[name] = ("checkpoint", getattr(self, name))
        root["jump"] = ("checkpoint", self.jump_mask())
        root["status"] = ("checkpoint", np.array(self.status, dtype=object))
        root["error"] = ("checkpoint", np.array(self.errors, dtype=object))
        for key in varying:
            if key in _STATISTICS:
                continue
            root[key] = ("checkpoint", _column([None if a is None else a.get(key)
                                                for a in per_attrs]))
        nodes: dict[str, Any] = {"/": xr.Dataset(root, coords=coords)}
        for group in _GROUPS:
            present = [tree[group].to_dataset() if tree is not None and group in tree.children
                       else None for tree in trees]
            if group == "sample_stats":  # one draw axis for every checkpoint to stack along
                present = [None if dataset is None else _acceptance_over_draws(dataset)
                           for dataset in present]
            if any(dataset is not None for dataset in present):
                nodes[group] = _stack(present, coords)
        tree = xr.DataTree.from_dict(nodes)
        tree.attrs.update(_netcdf_attrs(shared))
        tree.attrs["llc_kind"] = "trajectory"
        tree.attrs["checkpoint_attrs"] = json.dumps(varying)
        tree.attrs["trajectory_elapsed_seconds"] = float(self.elapsed)
        return tree

    @classmethod
    def from_arviz(cls, tree: xr.DataTree) -> TrajectoryResult:
        """Rebuild a trajectory from :meth:`to_arviz`'s DataTree (e.g. read from disk)."""
        import xarray as xr

        if tree.attrs.get("llc_kind") != "trajectory":
            raise ValueError("`tree` is not an llc trajectory (no root attribute "
                             "llc_kind='trajectory'); read single results with llc.load")
        root = tree.to_dataset()
        steps = np.asarray(root["step"].values)
        status = [str(s) for s in root["status"].values]
        errors = ["" if e is None else str(e) for e in root["error"].values]
        varying = json.loads(str(tree.attrs.get("checkpoint_attrs", "[]")))
        shared = {str(key): _plain(value) for key, value in tree.attrs.items()
                  if key not in ("llc_kind", "checkpoint_attrs", "trajectory_elapsed_seconds")}
        results: list[LLCResult | None] = []
        for index, state in enumerate(status):
            if state != DONE:
                results.append(None)
                continue
            attrs = dict(shared)
            for key in varying:
                value = _plain(root[key].values[index])
                if not (isinstance(value, float) and math.isnan(value)):
                    attrs[key] = value
            nodes = {"/": xr.Dataset(attrs=attrs)}
            for group in _GROUPS:
                if group in tree.children:
                    dataset = tree[group].to_dataset().isel(checkpoint=index)
                    nodes[group] = dataset.drop_vars(["checkpoint", "step"], errors="ignore")
            single = xr.DataTree.from_dict(nodes)
            single.attrs.update(attrs)
            results.append(LLCResult.from_arviz(single))
        trajectory = cls(steps=steps, results=results, errors=errors, status=status,
                         attrs=shared,
                         elapsed=float(tree.attrs.get("trajectory_elapsed_seconds", np.nan)))
        return trajectory

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_arviz` to ``path``: zarr if it ends in ``.zarr``, else netCDF-4
        (h5netcdf). :func:`llc.load` reads it back as a :class:`TrajectoryResult`."""
        from .result import save_tree

        return save_tree(self.to_arviz(), path)

    # ---- plot -----------------------------------------------------------------------------
    def plot(self, *, log_x: bool | None = None, training_loss: Any = None,
             reference: Any = None, z: float = JUMP_Z, relative: float = JUMP_RELATIVE
             ) -> Figure:
        """λ̂ (± 2 MCSE) and the training loss against the training step, on two aligned
        axes, with the abrupt changes of λ̂ shaded: :func:`llc.plots.plot_trajectory`."""
        return draw("trajectory", self, log_x=log_x, training_loss=training_loss,
                    reference=reference, z=z, relative=relative)


# ---- helpers for the DataTree ---------------------------------------------------------------
def _plain(value: Any) -> Any:
    """NumPy scalars and 0-d arrays as Python scalars."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return value.item() if isinstance(value, np.generic) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _column(values: list[Any]) -> np.ndarray:
    """A per-checkpoint column: float64 if every present value is a number (NaN where
    missing), else text ("" where missing)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values])
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _acceptance_over_draws(dataset: Any) -> Any:
    """``dataset`` with ``mala_acceptance`` over (chain, draw), NaN where not diagnosed, in
    place of its own ``mala_draw`` coordinate (whose draws differ between checkpoints)."""
    if "mala_acceptance" not in dataset.data_vars or "mala_draw" not in dataset.dims:
        return dataset
    acceptance = mala_acceptance_per_draw(dataset, int(dataset.sizes["draw"]))
    return dataset.drop_vars(["mala_acceptance", "mala_draw"]).assign(
        mala_acceptance=(("chain", "draw"), acceptance))


def _stack(datasets: list[Any], coords: dict[str, Any]) -> Any:
    """Datasets of one group stacked along a new ``checkpoint`` dimension, padded with NaN
    (False for booleans) where a checkpoint lacks a variable, draws or chains."""
    import xarray as xr

    first = next(d for d in datasets if d is not None)
    names = list(dict.fromkeys(name for d in datasets if d is not None for name in d.data_vars))
    variables: dict[str, Any] = {}
    dim_sizes: dict[str, int] = {}
    for dataset in datasets:
        if dataset is not None:
            for dim, size in dataset.sizes.items():
                dim_sizes[dim] = max(dim_sizes.get(dim, 0), int(size))
    for name in names:
        template = next(d[name] for d in datasets if d is not None and name in d.data_vars)
        dims = template.dims
        shape = (len(datasets), *(dim_sizes[dim] for dim in dims))
        boolean = template.dtype == bool
        out = np.zeros(shape, dtype=bool) if boolean else np.full(shape, np.nan)
        for index, dataset in enumerate(datasets):
            if dataset is None or name not in dataset.data_vars:
                continue
            values = np.asarray(dataset[name].values)
            region: tuple[int | slice, ...] = (index, *(slice(0, n) for n in values.shape))
            out[region] = values
        variables[name] = (("checkpoint", *dims), out)
    dim_coords = {dim: np.arange(size) for dim, size in dim_sizes.items()
                  if dim in first.coords or dim in ("chain", "draw")}
    return xr.Dataset(variables, coords={**coords, **dim_coords})


# ---- the driver -----------------------------------------------------------------------------
def _validate_checkpoints(checkpoints: Any, steps: Any) -> tuple[list[Any], np.ndarray]:
    if isinstance(checkpoints, Mapping):
        if steps is not None:
            raise ValueError("`steps` must be None when `checkpoints` is a mapping {step: "
                             "params}: its keys are the steps")
        keys = list(checkpoints.keys())
        for key in keys:
            if isinstance(key, bool) or not isinstance(key, numbers.Real):
                raise TypeError(
                    "`checkpoints` as a mapping must map training steps (numbers) to params; "
                    f"got the key {key!r}. To estimate λ̂ of one params pytree use "
                    "llc.estimate; for several pass a list of params pytrees")
        items = sorted(checkpoints.items(), key=lambda item: item[0])
        steps = _validate_steps([key for key, _ in items], len(items))
        return [params for _, params in items], steps
    if isinstance(checkpoints, (str, bytes)) or not (
            hasattr(checkpoints, "__len__") and hasattr(checkpoints, "__getitem__")):
        raise TypeError(
            "`checkpoints` must be a sequence (list, tuple) of params pytrees, one per "
            f"checkpoint, or a mapping {{step: params}}; got {type(checkpoints).__name__}"
            + (" (a one-shot iterator: wrap it in list())" if hasattr(checkpoints, "__next__")
               else ""))
    items = [checkpoints[index] for index in range(len(checkpoints))]
    if steps is None:
        return items, np.arange(len(items), dtype=np.int64)
    return items, _validate_steps(steps, len(items))


def _validate_steps(steps: Any, count: int) -> np.ndarray:
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__"):
        raise TypeError(f"`steps` must be a sequence of numbers; got {type(steps).__name__}")
    values = list(np.asarray(steps).ravel()) if isinstance(steps, np.ndarray) else list(steps)
    if isinstance(steps, np.ndarray) and steps.ndim != 1:
        raise ValueError(f"`steps` must be one-dimensional; got shape {steps.shape}")
    if len(values) != count:
        raise ValueError(f"`steps` has {len(values)} entries but `checkpoints` has {count}: "
                         "give one training step per checkpoint")
    for index, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"`steps[{index}]` must be a number; got {type(value).__name__}")
        if not math.isfinite(float(value)):
            raise ValueError(f"`steps[{index}]` must be finite; got {value!r}")
    for index in range(1, len(values)):
        if not values[index] > values[index - 1]:
            raise ValueError(
                f"`steps` must be strictly increasing: steps[{index}]={values[index]!r} "
                f"follows steps[{index - 1}]={values[index - 1]!r}")
    if all(float(value).is_integer() for value in values):
        return np.array([int(value) for value in values], dtype=np.int64)
    return np.array([float(value) for value in values], dtype=np.float64)


def _shared_attrs(results: list[LLCResult | None]) -> dict[str, Any]:
    done = [result.attrs for result in results if result is not None]
    if not done:
        return {}
    first = done[0]
    return {key: value for key, value in first.items()
            if all(key in attrs and _same(_plain(attrs[key]), _plain(value)) for attrs in done)}


def _emit(caught: list[warnings.WarningMessage], index: int, step: Any) -> None:
    """Re-emit a checkpoint's warnings with the checkpoint named in front."""
    for record in caught:
        category = record.category if issubclass(record.category, Warning) else UserWarning
        try:
            warnings.warn(f"checkpoint {index} (step {step}): {record.message}", category,
                          stacklevel=3)
        except TypeError:  # a warning class whose constructor takes other arguments
            warnings.warn(f"checkpoint {index} (step {step}): {record.message}", UserWarning,
                          stacklevel=3)


def estimate_trajectory(
    checkpoints: Sequence[Any] | Mapping[Any, Any],
    loss_fn: Callable[[Any, Any], Any],
    data: Any,
    *,
    steps: Sequence[float] | np.ndarray | None = None,
    on_error: str = "record",
    progress: bool | None = None,
    **estimate_kwargs: Any,
) -> TrajectoryResult:
    """Estimate λ̂ at each of a sequence of training checkpoints, with shared settings.

    Calls :func:`llc.estimate` ``(loss_fn, params, data, **estimate_kwargs)`` for every
    checkpoint's params, in order, with the same settings and the same ``seed`` (default 0):
    the chains of every checkpoint use the same random numbers, so differences between
    checkpoints are not seed noise.

    Parameters
    ----------
    checkpoints
        A sequence of params pytrees, one per checkpoint, each of any backend
        :func:`llc.estimate` accepts (e.g. a list of ``state_dict`` copies, of dicts of JAX
        arrays); or a mapping ``{step: params}`` (then ``steps`` must be ``None``).
    loss_fn, data
        As for :func:`llc.estimate`, shared by every checkpoint.
    steps
        The training step of each checkpoint, strictly increasing (numbers, e.g. optimizer
        steps or epochs); default ``0, 1, 2, ...``.
    on_error
        ``"record"`` (default): a checkpoint whose estimate raises is recorded as failed
        (its message in ``result.errors``, a ``UserWarning`` names it) and the next one runs;
        if every checkpoint fails, a ``RuntimeError`` chained to the first error is raised.
        ``"raise"``: the first failure raises :class:`TrajectoryError`, whose ``result``
        holds the checkpoints finished before it.
    progress
        Show one progress bar over the checkpoints on stderr; default: only when stderr is
        a terminal. The per-checkpoint bars of :func:`llc.estimate` are off.
    **estimate_kwargs
        Passed to :func:`llc.estimate` unchanged (``step_size``, ``nbeta``,
        ``localization``, ``num_draws``, ``seed``, ...). ``checkpoint`` and ``resume`` are
        refused: one file would be overwritten by every checkpoint; save the trajectory with
        :meth:`TrajectoryResult.save` instead.

    Returns
    -------
    TrajectoryResult
        Per-checkpoint results and arrays, ``jumps()``, ``summary()``, ``to_arviz()``,
        ``save()``, ``plot()``. The warnings of each estimate (health findings) are
        re-emitted with the checkpoint and its step in front. After a ``KeyboardInterrupt``
        the checkpoints done so far come back (``result.complete`` is False, an
        ``IncompleteRunWarning`` says where it stopped); an interrupt before the first
        checkpoint finished propagates.

    Raises
    ------
    TypeError, ValueError
        For a malformed ``checkpoints``, ``steps`` or ``on_error`` (the message names the
        argument): empty checkpoints, a ``steps`` of another length, steps not strictly
        increasing.
    TrajectoryError
        Under ``on_error="raise"``, when a checkpoint fails.
    RuntimeError
        Under ``on_error="record"``, when every checkpoint fails.

    Examples
    --------
    Checkpoints saved during training (here: the minimum of a linear regression and a point
    on the way to it):

    >>> problem = llc.problems.LinearRegression(4, 3)
    >>> loss_fn, params, data = problem.in_backend("numpy", 10_000)
    >>> saved = [{name: 0.9 * value for name, value in params.items()}, params]
    >>> trajectory = llc.estimate_trajectory(saved, loss_fn, data, steps=[500, 1000],
    ...                                      step_size=1e-4, batch_size=500)
    >>> trajectory.llc_mean.shape
    (2,)
    >>> jumps = trajectory.jumps()        # training steps where λ̂ changed abruptly
    >>> figure = trajectory.plot()        # λ̂ and L_n(w*) against the step
    """
    started = time.perf_counter()
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable as loss_fn(params, batch); got {loss_fn!r}")
    if not isinstance(on_error, str) or on_error not in ("record", "raise"):
        raise ValueError(f"`on_error` must be 'record' or 'raise'; got {on_error!r}")
    for refused in ("checkpoint", "resume"):
        if refused in estimate_kwargs:
            raise ValueError(
                f"`{refused}` is not supported by estimate_trajectory: every checkpoint would "
                "write the same file. Save the result with TrajectoryResult.save(path)")
    items, step_values = _validate_checkpoints(checkpoints, steps)
    if not items:
        raise ValueError("`checkpoints` is empty: give at least one params pytree")
    if progress is None:
        progress = sys.stderr.isatty()

    from tqdm.auto import tqdm

    count = len(items)
    results: list[LLCResult | None] = [None] * count
    errors = [""] * count
    status = [NOT_RUN] * count
    first_error: BaseException | None = None

    def snapshot() -> TrajectoryResult:
        return TrajectoryResult(steps=step_values, results=list(results), errors=list(errors),
                                status=list(status), attrs=_shared_attrs(results),
                                elapsed=time.perf_counter() - started)

    def run(index: int) -> LLCResult:
        return estimate(loss_fn, items[index], data, progress=False, **estimate_kwargs)

    interrupted_at: int | None = None
    with tqdm(total=count, disable=not progress, file=sys.stderr, desc="llc trajectory",
              unit="checkpoint", dynamic_ncols=True) as bar:
        bar.set_postfix_str(f"step {step_values[0].item()}")
        for outcome in sweep(range(count), run, record=True):
            index, step = outcome.point, step_values[outcome.point].item()
            result = outcome.result
            if outcome.error is not None:  # recorded, or re-raised with the partial result
                error = outcome.error
                errors[index] = f"{type(error).__name__}: {error}"
                status[index] = FAILED
                first_error = first_error or error
                if on_error == "raise":
                    raise TrajectoryError(
                        f"checkpoint {index} (step {step}) failed: {errors[index]}; "
                        f"`error.result` holds the {index} checkpoints before it",
                        snapshot(), index) from error
                warnings.warn(f"checkpoint {index} (step {step}) failed and is left out: "
                              f"{errors[index]}", UserWarning, stacklevel=2)
                bar.update(1)
            elif result is not None:
                results[index] = result
                status[index] = DONE
                bar.update(1)
                bar.set_postfix_str(f"step {step}: λ̂ {result.llc_mean:.4g}")
                _emit([w for w in outcome.caught
                       if not issubclass(w.category, IncompleteRunWarning)], index, step)
            if outcome.interrupted:  # before the estimate returned, or inside it
                interrupted_at = index + (result is not None)
            elif index + 1 < count:
                bar.set_postfix_str(f"step {step_values[index + 1].item()}")

    trajectory = snapshot()
    if interrupted_at is not None:
        done = sum(state == DONE for state in status)
        if done == 0:
            raise KeyboardInterrupt("interrupted before the first checkpoint finished")
        warnings.warn(
            f"interrupted at checkpoint {min(interrupted_at, count - 1)} of {count}: the "
            f"result holds the {done} checkpoints done so far (result.complete is False)",
            IncompleteRunWarning, stacklevel=2)
        return trajectory
    if all(state == FAILED for state in status):
        raise RuntimeError(f"every checkpoint failed; the first: {errors[0]}") from first_error
    return trajectory
