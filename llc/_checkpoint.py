"""Checkpoints of a run in progress: the DataTree of the draws so far plus the sampler states.

A checkpoint is the result's DataTree (NaN where a draw is still to come) with root attributes
``complete`` and ``steps_done`` and a group ``sampler_state`` holding each chain's sampler
state at step ``steps_done``. Because every random number is a function of (seed, chain,
step), continuing from it reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._engine.plan import ChainPlan
from ._engine.runner import ChainRun, RunnerState, write_atomically
from .result import LLCResult, _netcdf_attrs, mala_acceptance_per_draw

_COMPARED_APPROXIMATELY = ("init_loss", "init_grad_norm", "loss_rounding")
_ADDED_LATER = ("param_dtype", "loss_rounding")  # compared where the checkpoint has them
_NOT_COMPARED = ("inference_library_version", "loss_repeat_difference", "step_size_tuning",
                 "devices")  # the layout does not change the numbers


def _engine(path: Path) -> str:
    return "zarr" if path.suffix == ".zarr" or path.is_dir() else "h5netcdf"


def writer(path: Path, plan: ChainPlan, attrs: dict[str, Any], origin: float,
           live_attrs: Callable[[], dict[str, Any]] | None = None,
           probe_loss_at_center: np.ndarray | None = None) -> Callable[[RunnerState], None]:
    """A checkpointer writing ``path``; ``origin`` is the ``perf_counter`` time of the start.
    ``live_attrs()`` adds attributes that change during the run (``step_size="auto"``'s step
    and its tuner's state in the burn-in)."""
    import xarray as xr

    def write(state: RunnerState) -> None:
        live = {} if live_attrs is None else live_attrs()
        snapshot = LLCResult.from_chains(
            state.runs,
            attrs={**attrs, **live, "complete": int(state.step >= plan.steps),
                   "steps_done": state.step},
            elapsed=time.perf_counter() - origin,
            probe_loss_at_center=probe_loss_at_center,
        )
        tree = snapshot.to_arviz()
        tree["sampler_state"] = xr.DataTree(_states_to_dataset(plan, state.states))

        def save(target: Path) -> None:
            if _engine(path) == "zarr":
                tree.to_zarr(target, mode="w")
            else:
                tree.to_netcdf(target, engine="h5netcdf")

        write_atomically(path, save)

    return write


def _states_to_dataset(plan: ChainPlan, states: list[Any]) -> Any:
    import xarray as xr

    variables = {}
    for name in type(states[0])._fields:
        stacked = np.stack([plan.backend.to_numpy(getattr(state, name)) for state in states])
        dims = ("chain", *(f"{name}_dim_{axis}" for axis in range(stacked.ndim - 1)))
        variables[name] = (dims, stacked)
    return xr.Dataset(variables)


def saved_attrs(path: Path) -> dict[str, Any]:
    """The root attributes of the checkpoint at ``path``, as Python values."""
    import xarray as xr

    with xr.open_datatree(path, engine=_engine(path)) as opened:
        attrs = dict(opened.attrs)
    return {str(key): value.item() if isinstance(value, np.generic) else value
            for key, value in attrs.items()}


def restore(path: Path, plan: ChainPlan, attrs: dict[str, Any]) -> tuple[RunnerState, float]:
    """The runner state saved at ``path`` and the elapsed seconds before the interruption.

    Raises
    ------
    ValueError
        If the checkpoint was written with other settings, data or params (naming the first
        that differs) or is not an llc checkpoint.
    """
    import xarray as xr

    with xr.open_datatree(path, engine=_engine(path)) as opened:
        tree = opened.load()
    if "sampler_state" not in tree.children or "steps_done" not in tree.attrs:
        raise ValueError(f"`resume`: {str(path)!r} is not an llc checkpoint (no sampler state)")
    saved = {key: value.item() if isinstance(value, np.generic) else value
             for key, value in tree.attrs.items()}
    for key, value in _netcdf_attrs(attrs).items():  # compared as they were written
        if key in _NOT_COMPARED or (key in _ADDED_LATER and key not in saved):
            continue
        old = saved.get(key)
        same = (old is not None and np.isclose(old, value, rtol=1e-9, atol=0.0)
                if key in _COMPARED_APPROXIMATELY else old == value)
        if not same:
            raise ValueError(
                f"`resume`: the checkpoint {str(path)!r} was written with {key}={old!r}, but "
                f"this call has {key}={value!r}; resume with the same settings, data and params"
            )
    posterior = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset()
    warmup = tree["warmup_posterior"].to_dataset() if "warmup_posterior" in tree.children else None
    failed = set(json.loads(saved.get("failed_chains", "[]")))
    errors = json.loads(saved.get("chain_errors", "[]"))
    runs = []
    for chain in range(len(posterior["chain"])):
        run = ChainRun.empty(plan)
        run.draws["loss"][:] = posterior["loss"].values[chain]
        for name in run.draws:
            if name == "mala_acceptance":
                run.draws[name][:] = mala_acceptance_per_draw(
                    stats, run.draws[name].shape[0])[chain]
            elif name != "loss":
                run.draws[name][:] = stats[name].values[chain]
        if warmup is not None:
            run.warmup_loss[:] = warmup["loss"].values[chain]
        if run.params is not None and "parameters" in tree.children:
            run.params[:] = tree["parameters"].to_dataset()["w"].values[chain]
        if run.full_loss is not None and "full_loss" in tree.children:
            run.full_loss[:] = tree["full_loss"].to_dataset()["loss"].values[chain]
        if run.probe is not None and "probe_loss" in tree.children:
            run.probe[:] = tree["probe_loss"].to_dataset()["loss"].values[chain]
        if chain in failed:
            run.failure = errors[chain] or "failed before the checkpoint"
        runs.append(run)
    template = plan.algorithm.init(plan.center)
    saved_states = tree["sampler_state"].to_dataset()
    device = attrs.get("device")
    states = []
    for chain in range(len(runs)):
        fields = []
        for name in type(template)._fields:
            array = saved_states[name].values[chain]
            fields.append(plan.backend.from_numpy(array, dtype=str(array.dtype),
                                                  device=None if device == "cpu" else device))
        states.append(type(template)(*fields))
    elapsed = float(saved.get("elapsed_seconds", 0.0))
    return RunnerState(int(saved["steps_done"]), states, runs), elapsed
