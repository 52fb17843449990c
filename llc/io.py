"""Reading saved results back: :func:`load` for an estimate or a trajectory.

It sits above both :mod:`llc.result` and :mod:`llc.trajectory`, so that neither has to
know the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from .result import LLCResult
from .trajectory import TrajectoryResult

__all__ = ["load"]


def load(path: str | os.PathLike[str]) -> LLCResult | TrajectoryResult:
    """Read a result written by :meth:`LLCResult.save` (netCDF, or zarr for ``*.zarr``), or
    a trajectory written by :meth:`~llc.trajectory.TrajectoryResult.save` (then a
    :class:`~llc.trajectory.TrajectoryResult` comes back).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an llc result.
    """
    import xarray as xr

    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"`path` {str(source)!r} does not exist")
    engine = "zarr" if source.suffix == ".zarr" or source.is_dir() else "h5netcdf"
    with xr.open_datatree(source, engine=engine) as tree:
        if tree.attrs.get("llc_kind") == "trajectory":
            return TrajectoryResult.from_arviz(tree.load())
        return LLCResult.from_arviz(tree.load())
