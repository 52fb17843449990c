"""The multi-chain runner: chains advance in lockstep, in blocks of steps.

Every random number is a pure function of (seed, chain, step), so a run can stop at any block
boundary and continue from a checkpoint with the same result. A block ends every
``_FLUSH_EVERY`` steps; its per-step scalars are then copied to the host at once. A chain
whose values turn non-finite, or whose ``loss_fn`` raises, stops there and the others go on.

Two ways to advance a block, which the tests compare:

- *sequential* (every backend, every data source): a Python loop over steps and chains,
  one compiled sampler step per chain and step, the reference path;
- *vectorized* (backends with :class:`~llc._backend.ChainTransforms`, array data): the whole
  block is one compiled program, the chains mapped over (``vmap``) and the steps looped over
  on the device (``scan``), minibatches drawn there too (:mod:`llc._vectorized`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._backend import RowBuffer
from .plan import ChainPlan
from .vectorized import BlockKernel

_FLUSH_EVERY = 200  # steps per block: the per-step scalars reach the host once per block


@dataclass
class ChainRun:
    """One chain's host-side record (float64, NaN where not yet drawn) and its fate."""

    warmup_loss: np.ndarray
    draws: dict[str, np.ndarray]
    diverged_at: int | None = None  # step of the first non-finite loss or position
    error: BaseException | None = None
    failure: str | None = None  # a failure restored from a checkpoint
    params: np.ndarray | None = None  # (kept draw, param) when keep_params_every is set
    full_loss: np.ndarray | None = None  # L_n(w_t) of every full_loss_every-th draw
    probe: np.ndarray | None = None  # (probe, *probe_shape) per-sample losses

    @classmethod
    def empty(cls, plan: ChainPlan) -> ChainRun:
        kept = (np.full((plan.num_kept_params, int(plan.center.shape[0])), np.nan)
                if plan.keep_params_every else None)
        full = np.full(plan.num_full_losses, np.nan) if plan.num_full_losses else None
        probe = (np.full((plan.num_probes, *plan.probe_shape), np.nan) if plan.num_probes
                 else None)
        draws = {name: np.full(plan.num_draws, np.nan) for name in plan.recorded_fields}
        return cls(np.full(plan.num_burnin, np.nan), draws, params=kept, full_loss=full,
                   probe=probe)

    @property
    def failed(self) -> bool:
        return self.diverged_at is not None or self.error is not None or self.failure is not None

    @property
    def recording(self) -> bool:
        """Whether new steps of this chain are still recorded (a chain that raised keeps
        what it recorded before)."""
        return self.diverged_at is None and self.failure is None

    def failure_message(self) -> str:
        if self.diverged_at is not None:
            return f"diverged at step {self.diverged_at}: non-finite loss or parameters"
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {self.error}"
        return self.failure or ""


@dataclass
class BlockRecord:
    """One chain's per-step scalars over a block, on the host.

    ``steps`` are the recorded steps in increasing order (burn-in steps and draws); the
    per-draw fields are NaN at burn-in steps, and ``mala_acceptance`` is NaN where the step
    was not diagnosed. ``positions`` maps a draw index to its kept position w_t, and
    ``full_losses`` a draw index to L_n(w_t), ``probes`` a draw index to the probe losses.
    """

    steps: np.ndarray
    values: dict[str, np.ndarray]
    positions: dict[int, np.ndarray] = field(default_factory=dict)
    full_losses: dict[int, float] = field(default_factory=dict)
    probes: dict[int, np.ndarray] = field(default_factory=dict)

    def record_into(self, plan: ChainPlan, run: ChainRun) -> None:
        """Write into ``run``; set ``run.diverged_at`` at the first non-finite value.

        A burn-in step counts its loss and distance; a draw counts every per-draw field.
        """
        steps = self.steps
        loss, distance = self.values["loss"], self.values["distance"]
        bad = ~(np.isfinite(loss) & np.isfinite(distance))
        count = int(np.argmax(bad)) if bad.any() else steps.size
        if bad.any():
            run.diverged_at = int(steps[count])
        steps = steps[:count]
        warmup = steps < plan.num_burnin
        run.warmup_loss[steps[warmup]] = loss[:count][warmup]
        draws = (steps[~warmup] - plan.num_burnin) // plan.thin
        for name in run.draws:
            run.draws[name][draws] = self.values[name][:count][~warmup]
        done = plan.draws_before(steps[-1] + 1 if steps.size else 0)
        if run.params is not None and plan.keep_params_every:
            for draw, position in self.positions.items():
                if draw < done:
                    run.params[draw // plan.keep_params_every] = position
        if run.full_loss is not None and plan.full_loss_every:
            for draw, value in self.full_losses.items():
                if draw < done:
                    run.full_loss[draw // plan.full_loss_every] = value
        if run.probe is not None and plan.probe_every:
            for draw, losses in self.probes.items():
                if draw < done:
                    run.probe[draw // plan.probe_every] = losses


@dataclass
class RunnerState:
    """Where a run stands: the next step and each chain's sampler state and record."""

    step: int
    states: list[Any]
    runs: list[ChainRun]
    interrupted: bool = False


Checkpointer = Callable[[RunnerState], None]


class SequentialChains:
    """The reference path: a Python loop over steps and, in each step, over the chains."""

    def __init__(self, plan: ChainPlan, chain_keys: list[Any], start: int) -> None:
        backend = plan.backend
        split = [backend.split(key, 2) for key in chain_keys]
        self.plan = plan
        self.noise_keys = [keys[0] for keys in split]
        self.streams = [plan.dataset.stream(keys[1], start) for keys in split]
        # the trace's batches: a pass of their own, one batch per draw
        self.trace_streams = [plan.dataset.stream(backend.fold_in(keys[1], 1),
                                                  plan.draws_before(start))
                              for keys in split] if plan.trace_loss else None

    def _draw_row(self, chain: int, position: Any, batch: Any, info: Any) -> dict[str, Any]:
        """The per-draw fields of a chain at its position w_t (before the step)."""
        plan = self.plan
        row = {"loss": info.loss, "distance": info.distance, "grad_norm": info.grad_norm}
        if self.trace_streams is not None and plan.trace_loss is not None:
            batch = next(self.trace_streams[chain])
            row["loss"] = plan.trace_loss(position, batch)
        if plan.first_order:  # NaN from a sampler that does not report it
            row["first_order"] = (info.loss * float("nan") if info.first_order is None
                                  else info.first_order)
        if plan.batch_baseline:
            row["baseline_loss"] = plan.batch_baseline(plan.center, batch)
        return row

    def use(self, plan: ChainPlan) -> None:
        """Go on with another plan of the same run (a new step size while it is tuned)."""
        self.plan = plan

    def advance(self, state: RunnerState, stop: int) -> dict[int, BlockRecord]:
        """Advance every healthy chain to ``stop``, record the steps on the host, and return
        each recorded chain's block.

        A ``KeyboardInterrupt`` leaves ``state`` at the last whole round, recorded, and
        propagates.
        """
        plan, backend, algorithm = self.plan, self.plan.backend, self.plan.algorithm
        columns = max(len(plan.recorded_fields), len(plan.warmup_fields))
        tuning = plan.tuning_window is not None
        records: dict[int, BlockRecord] = {}
        tables = [backend.row_buffer(stop - state.step, columns) for _ in state.runs]
        steps: list[list[int]] = [[] for _ in state.runs]
        positions: list[dict[int, Any]] = [{} for _ in state.runs]
        full_losses: list[dict[int, float]] = [{} for _ in state.runs]
        probes: list[dict[int, np.ndarray]] = [{} for _ in state.runs]
        try:
            while state.step < stop:
                step = state.step
                draw = (step - plan.num_burnin) // plan.thin
                recorded = plan.is_draw(step)
                diagnose = recorded and plan.mala_every is not None and draw % plan.mala_every == 0
                warming = step < plan.num_burnin
                states = list(state.states)  # committed after the round: an interrupt
                round_rows = []              # leaves every chain at `step`
                for chain, run in enumerate(state.runs):
                    if run.failed:
                        continue
                    try:
                        batch = next(self.streams[chain])
                        position = state.states[chain].position  # w_t
                        states[chain], info = algorithm.step(
                            backend.fold_in(self.noise_keys[chain], step), states[chain], batch,
                            diagnose or (tuning and warming))
                        if warming:
                            round_rows.append((chain, self._warmup_row(batch, info)))
                        elif recorded:
                            row = self._draw_row(chain, position, batch, info)
                            fields = [row[name] for name in plan.fields]
                            round_rows.append((chain, fields + ([info.mala_acceptance]
                                                                if diagnose else [])))
                            if plan.keep_params_every and draw % plan.keep_params_every == 0:
                                positions[chain][draw] = position
                            if plan.full_loss and plan.full_loss_every \
                                    and draw % plan.full_loss_every == 0:
                                full_losses[chain][draw] = plan.full_loss(position)
                            if plan.probe and plan.probe_every \
                                    and draw % plan.probe_every == 0:
                                probes[chain][draw] = plan.probe(position)
                    except Exception as error:  # a failing chain never loses the others' work
                        run.error = error
                for chain, values in round_rows:
                    tables[chain].set(len(steps[chain]), values)
                    steps[chain].append(step)
                state.states = states
                state.step += 1
        finally:
            for chain, run in enumerate(state.runs):
                if steps[chain] and run.recording:
                    records[chain] = self._record(steps[chain], tables[chain], positions[chain],
                                                  full_losses[chain], run, probes[chain])
        return records

    def _warmup_row(self, batch: Any, info: Any) -> list[Any]:
        """The :attr:`ChainPlan.warmup_fields` of a burn-in step."""
        plan = self.plan
        if plan.tuning_window is None or plan.warmup_baseline is None:
            return [info.loss, info.distance]
        nan = info.loss * float("nan")
        return [info.loss, info.distance, plan.warmup_baseline(plan.center, batch),
                nan if info.mala_acceptance is None else info.mala_acceptance, info.grad_norm,
                nan if info.grad_power is None else info.grad_power]

    def _record(self, steps: list[int], table: RowBuffer, positions: dict[int, Any],
                full_losses: dict[int, float], run: ChainRun,
                probes: dict[int, np.ndarray]) -> BlockRecord:
        """Copy a block's rows to the host: burn-in rows hold the
        :attr:`ChainPlan.warmup_fields`, draws the :attr:`ChainPlan.recorded_fields` (the
        other fields stay NaN), and ``mala_acceptance`` is NaN where not diagnosed."""
        plan = self.plan
        host = table.to_numpy()[:len(steps)]
        step_array = np.array(steps, dtype=np.int64)
        warming = step_array < plan.num_burnin
        values = {name: np.full(len(steps), np.nan)
                  for name in dict.fromkeys(plan.recorded_fields + plan.warmup_fields)}
        for column, name in enumerate(plan.warmup_fields):
            values[name][warming] = host[warming, column]
        for column, name in enumerate(plan.recorded_fields):
            values[name][~warming] = host[~warming, column]
        kept = {draw: plan.backend.to_numpy(position) for draw, position in positions.items()}
        record = BlockRecord(step_array, values, kept, full_losses, probes)
        record.record_into(plan, run)
        return record


class VectorizedChains:
    """The fast path: each block is one compiled program over all chains (``vmap`` + ``scan``).

    Chains that failed are still carried through the program (their values are ignored), so
    the compiled shapes never change. An exception inside the program stops every chain that
    was still running: their earlier draws are kept.
    """

    def __init__(self, plan: ChainPlan, chain_keys: list[Any], start: int) -> None:
        self.plan = plan
        self.chain_keys = chain_keys
        self.kernel = BlockKernel(plan, chain_keys)

    def use(self, plan: ChainPlan) -> None:
        """Go on with another plan of the same run (a new step size while it is tuned): an
        adapter that reuses programs passes the new numbers to the same block."""
        self.plan = plan
        self.kernel = BlockKernel(plan, self.chain_keys)

    def advance(self, state: RunnerState, stop: int) -> dict[int, BlockRecord]:
        """Advance every chain to ``stop`` in one program and return each recorded chain's
        block; on an interrupt, nothing moves."""
        plan, backend = self.plan, self.plan.backend
        start = state.step
        records: dict[int, BlockRecord] = {}
        if all(run.failed for run in state.runs):
            state.step = stop
            return records
        try:
            states, values = self.kernel.run(state.states, start, stop)
        except Exception as error:  # noqa: BLE001  (recorded per chain, like a raising loss)
            for run in state.runs:
                if not run.failed:
                    run.error = error
            state.step = stop
            return records
        steps = np.arange(start, stop)
        keep = np.array([step < plan.num_burnin or plan.is_draw(step)
                         for step in range(start, stop)])
        kept_step, full_loss_step = plan.next_kept_step(start), plan.next_full_loss_step(start)
        probe_step = plan.next_probe_step(start)
        first_draw = plan.draws_before(start)
        for chain, run in enumerate(state.runs):
            if not run.recording or run.error is not None:
                continue
            chain_values = {name: column[keep, chain] for name, column in values.items()
                            if name in run.draws or name in plan.warmup_fields}
            positions, full_losses, probes = {}, {}, {}
            position = state.states[chain].position  # a block starts at each kept draw
            if kept_step == start:
                positions[first_draw] = backend.to_numpy(position)
            try:
                if full_loss_step == start and plan.full_loss is not None:
                    full_losses[first_draw] = plan.full_loss(position)
                if probe_step == start and plan.probe is not None:
                    probes[first_draw] = plan.probe(position)
            except Exception as error:  # noqa: BLE001  (like a raising loss)
                run.error = error
                continue
            records[chain] = BlockRecord(steps[keep], chain_values, positions, full_losses,
                                         probes)
            records[chain].record_into(plan, run)
        state.states = states
        state.step = stop
        return records


def _block_stop(plan: ChainPlan, step: int, vectorized: bool) -> int:
    """Where the block starting at ``step`` ends: the next multiple of ``_FLUSH_EVERY``, the
    end of the run, the end of a tuning window (``plan.tuning_window``, in the burn-in), or
    (vectorized) the next draw whose position the host needs (kept, or its full-data loss
    evaluated), which starts a block of its own."""
    if plan.tuning_window and step < plan.num_burnin:
        return min((step // plan.tuning_window + 1) * plan.tuning_window, plan.num_burnin)
    stop = min((step // _FLUSH_EVERY + 1) * _FLUSH_EVERY, plan.steps)
    kept = plan.next_host_step(step + 1) if vectorized else None
    return stop if kept is None else min(stop, kept)


class WarmupTuner(Protocol):
    """What the runner asks of a controller that tunes the sampler during the burn-in
    (:class:`llc._adapt.StepSizeTuner`): the burn-in runs in windows of ``window`` steps."""

    window: int

    def begin_window(self, states: list[Any]) -> tuple[Any, list[Any]]:
        """The sampler of the next window and the chains' states moved to it."""

    def end_window(self, start: int, records: dict[int, BlockRecord], states: list[Any]
                   ) -> tuple[set[int], set[int]]:
        """Score the window begun at ``start``; the chains to put back where it began, and
        those to start again from w* (a chain stuck where no step the others take is stable
        for it)."""

    def begin_draws(self, states: list[Any]) -> tuple[Any, list[Any]]:
        """After the last window: the sampler of the draws and the chains' states for it."""


def _undo_window(state: RunnerState, start: int, states: dict[int, Any]) -> None:
    """Put each chain of ``states`` back at step ``start`` with the state given there (the
    one it had when the window began, or a fresh one at w*), its burn-in losses from
    ``start`` on forgotten (a diverged window, a stuck chain, or an interrupted window)."""
    for chain, chain_state in states.items():
        run = state.runs[chain]
        state.states[chain] = chain_state
        run.warmup_loss[start:] = np.nan
        if run.diverged_at is not None and run.diverged_at >= start:
            run.diverged_at = None


def run_chains(plan: ChainPlan, chain_keys: list[Any], state: RunnerState, *, progress: bool,
               checkpoint: Checkpointer | None = None, checkpoint_every: int = 1000,
               vectorized: bool = False, tuner: WarmupTuner | None = None) -> RunnerState:
    """Advance every healthy chain from ``state.step`` to the end, in lockstep.

    With a ``tuner`` (and ``plan.tuning_window`` set to its window) the burn-in is its warm-up
    phase: the chains run a window at a time with the tuner's sampler, a chain that diverged
    in a window is put back where the window began (it is not failed), and the draws use the
    sampler the tuner settles on. A chain the tuner finds stuck (put back in two windows in a
    row) starts again from w*.

    A ``KeyboardInterrupt`` ends the run at the last whole round (sequential) or block
    (vectorized), in the burn-in of a tuned run at the start of its window: the result is
    marked interrupted (and checkpointed, when asked) instead of being lost.
    """
    from tqdm.auto import tqdm

    if tuner is not None and state.step < plan.num_burnin:
        algorithm, state.states = tuner.begin_window(state.states)
        plan = dataclasses.replace(plan, algorithm=algorithm)
    elif tuner is not None:
        raise ValueError("a tuner serves the burn-in: the run is past it")
    chains = (VectorizedChains if vectorized else SequentialChains)(plan, chain_keys, state.step)
    last_checkpoint = state.step

    def show_estimate() -> None:
        healthy = [run for run in state.runs if not run.failed]
        values = [run.draws["loss"] - run.draws.get("baseline_loss", plan.init_loss)
                  for run in healthy]
        drawn = np.concatenate(values) if values else np.empty(0)
        drawn = drawn[np.isfinite(drawn)]
        if drawn.size:
            bar.set_postfix(llc=f"{plan.nbeta * drawn.mean():.4g}", refresh=False)

    with tqdm(total=plan.steps, initial=state.step, disable=not progress, file=sys.stderr,
              desc=f"llc {len(chain_keys)} chains", unit="step", dynamic_ncols=True) as bar:
        try:
            while state.step < plan.steps:
                start, before = state.step, list(state.states)
                try:
                    records = chains.advance(state, _block_stop(plan, state.step, vectorized))
                except KeyboardInterrupt:
                    if tuner is not None and start < plan.num_burnin:  # redo the whole window
                        state.step = start
                        _undo_window(state, start, dict(enumerate(before)))
                    raise
                if tuner is not None and start < plan.num_burnin:
                    put_back, restart = tuner.end_window(start, records, state.states)
                    _undo_window(state, start, {
                        **{chain: before[chain] for chain in put_back},
                        **{chain: plan.algorithm.init(plan.center) for chain in restart}})
                    begin = (tuner.begin_window if state.step < plan.num_burnin
                             else tuner.begin_draws)
                    algorithm, state.states = begin(state.states)
                    plan = dataclasses.replace(plan, algorithm=algorithm)
                    chains.use(plan)
                show_estimate()
                bar.update(state.step - bar.n)
                if checkpoint is not None and (state.step - last_checkpoint >= checkpoint_every
                                               or state.step == plan.steps):
                    checkpoint(state)
                    last_checkpoint = state.step
        except KeyboardInterrupt:
            state.interrupted = True
            if checkpoint is not None:
                checkpoint(state)
    return state


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Write with ``write(temporary)`` next to ``path``, then rename over it."""
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    if temporary.exists():
        _remove(temporary)
    write(temporary)
    if path.exists() and path.is_dir():
        _remove(path)
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()
