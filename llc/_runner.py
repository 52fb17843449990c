"""The multi-chain runner: chains advance in lockstep, one step each per round.

Every random number is a pure function of (seed, chain, step), so a run can stop at any step
boundary and continue from a checkpoint with the same result. Per-step scalars are buffered
in the framework and copied to the host every ``_FLUSH_EVERY`` steps; a chain whose values
turn non-finite, or whose ``loss_fn`` raises, stops there and the others go on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import Backend

_FLUSH_EVERY = 200  # steps between copies of the buffered per-step scalars to the host


@dataclass(frozen=True)
class ChainPlan:
    """What every chain of one call shares."""

    backend: Backend
    algorithm: Any
    dataset: Any
    center: Any
    num_burnin: int
    num_draws: int
    thin: int
    nbeta: float
    init_loss: float
    batch_baseline: Callable[..., Any] | None
    mala_every: int | None
    keep_params_every: int | None = None

    @property
    def steps(self) -> int:
        return self.num_burnin + self.num_draws * self.thin

    @property
    def fields(self) -> tuple[str, ...]:
        """Per-draw statistics recorded on every draw."""
        return ("loss", "distance", "grad_norm") + (
            ("baseline_loss",) if self.batch_baseline else ())

    @property
    def num_kept_params(self) -> int:
        """Parameter draws kept per chain (every ``keep_params_every``-th draw)."""
        return 0 if not self.keep_params_every else -(-self.num_draws // self.keep_params_every)

    def draws_before(self, step: int) -> int:
        """Number of draws taken at steps < ``step``."""
        return max(0, -(-(step - self.num_burnin) // self.thin))


@dataclass
class ChainRun:
    """One chain's host-side record (float64, NaN where not yet drawn) and its fate."""

    warmup_loss: np.ndarray
    draws: dict[str, np.ndarray]
    diverged_at: int | None = None  # step of the first non-finite loss or position
    error: BaseException | None = None
    failure: str | None = None  # a failure restored from a checkpoint
    params: np.ndarray | None = None  # (kept draw, param) when keep_params_every is set

    @classmethod
    def empty(cls, plan: ChainPlan) -> ChainRun:
        fields = plan.fields + (("mala_acceptance",) if plan.mala_every else ())
        kept = (np.full((plan.num_kept_params, int(plan.center.shape[0])), np.nan)
                if plan.keep_params_every else None)
        return cls(np.full(plan.num_burnin, np.nan),
                   {name: np.full(plan.num_draws, np.nan) for name in fields}, params=kept)

    @property
    def failed(self) -> bool:
        return self.diverged_at is not None or self.error is not None or self.failure is not None

    def failure_message(self) -> str:
        if self.diverged_at is not None:
            return f"diverged at step {self.diverged_at}: non-finite loss or parameters"
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {self.error}"
        return self.failure or ""


@dataclass
class _Buffer:
    """A chain's per-step framework scalars not yet copied to the host."""

    warmup: list[tuple[int, Any, Any]] = field(default_factory=list)  # (step, loss, distance)
    draws: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)  # (step, fields)
    acceptances: list[tuple[int, Any]] = field(default_factory=list)  # (draw, acceptance)
    positions: list[tuple[int, Any]] = field(default_factory=list)  # (draw, kept position)

    def discard_from(self, step: int, plan: ChainPlan) -> None:
        """Forget what was recorded at steps ≥ ``step`` (an interrupted round)."""
        self.warmup = [row for row in self.warmup if row[0] < step]
        self.draws = [row for row in self.draws if row[0] < step]
        limit = plan.draws_before(step)
        self.acceptances = [row for row in self.acceptances if row[0] < limit]
        self.positions = [row for row in self.positions if row[0] < limit]

    def flush(self, plan: ChainPlan, run: ChainRun) -> None:
        """Copy to the host; set ``run.diverged_at`` at the first non-finite value."""
        backend = plan.backend

        def host(values: list[Any]) -> np.ndarray:
            return backend.to_numpy(backend.stack(values)).astype(np.float64)

        if self.warmup:
            loss = host([row[1] for row in self.warmup])
            distance = host([row[2] for row in self.warmup])
            steps = [row[0] for row in self.warmup]
            bad = ~(np.isfinite(loss) & np.isfinite(distance))
            if bad.any():
                first = int(np.argmax(bad))
                run.diverged_at = steps[first]
                steps, loss = steps[:first], loss[:first]
            run.warmup_loss[steps] = loss
        if self.draws and run.diverged_at is None:
            stacked = {name: host([row[1][i] for row in self.draws])
                       for i, name in enumerate(plan.fields)}
            bad = ~(np.isfinite(stacked["loss"]) & np.isfinite(stacked["distance"]))
            count = int(np.argmax(bad)) if bad.any() else len(self.draws)
            if bad.any():
                run.diverged_at = self.draws[count][0]
            indices = [(step - plan.num_burnin) // plan.thin for step, _ in self.draws[:count]]
            for name in plan.fields:
                run.draws[name][indices] = stacked[name][:count]
            limit = plan.draws_before(run.diverged_at) if run.diverged_at is not None else None
            kept = [row for row in self.acceptances if limit is None or row[0] < limit]
            if kept:
                run.draws["mala_acceptance"][[draw for draw, _ in kept]] = \
                    host([value for _, value in kept])
            kept = [row for row in self.positions if limit is None or row[0] < limit]
            if kept and run.params is not None and plan.keep_params_every:
                rows = [draw // plan.keep_params_every for draw, _ in kept]
                run.params[rows] = backend.to_numpy(backend.stack([p for _, p in kept]))
        self.warmup.clear()
        self.draws.clear()
        self.acceptances.clear()
        self.positions.clear()


@dataclass
class RunnerState:
    """Where a run stands: the next step and each chain's sampler state and record."""

    step: int
    states: list[Any]
    runs: list[ChainRun]
    interrupted: bool = False


Checkpointer = Callable[[RunnerState], None]


def run_chains(plan: ChainPlan, chain_keys: list[Any], state: RunnerState, *, progress: bool,
               checkpoint: Checkpointer | None = None, checkpoint_every: int = 1000
               ) -> RunnerState:
    """Advance every healthy chain from ``state.step`` to the end, in lockstep.

    A ``KeyboardInterrupt`` ends the run at the last whole round: the result is marked
    interrupted (and checkpointed, when asked) instead of being lost.
    """
    from tqdm.auto import tqdm

    backend, algorithm = plan.backend, plan.algorithm
    split = [backend.split(key, 2) for key in chain_keys]
    noise_keys = [keys[0] for keys in split]
    streams = [plan.dataset.stream(keys[1], state.step) for keys in split]
    buffers = [_Buffer() for _ in chain_keys]
    last_checkpoint = state.step

    def flush() -> None:
        for buffer, run in zip(buffers, state.runs):
            if run.diverged_at is None and run.failure is None:
                buffer.flush(plan, run)  # also a chain that raised: its earlier draws count
            else:
                buffer.discard_from(0, plan)
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
                step = state.step
                draw, offset = divmod(step - plan.num_burnin, plan.thin)
                recorded = step >= plan.num_burnin and offset == 0
                diagnose = recorded and plan.mala_every is not None and draw % plan.mala_every == 0
                states = list(state.states)  # committed after the round: an interrupt
                for chain, run in enumerate(state.runs):  # leaves every chain at `step`
                    if run.failed:
                        continue
                    try:
                        batch = next(streams[chain])
                        states[chain], info = algorithm.step(
                            backend.fold_in(noise_keys[chain], step), states[chain], batch,
                            diagnose)
                        if step < plan.num_burnin:
                            buffers[chain].warmup.append((step, info.loss, info.distance))
                        elif recorded:
                            extra = ((plan.batch_baseline(plan.center, batch),)
                                     if plan.batch_baseline else ())
                            buffers[chain].draws.append(
                                (step, (info.loss, info.distance, info.grad_norm, *extra)))
                            if diagnose and info.mala_acceptance is not None:
                                buffers[chain].acceptances.append((draw, info.mala_acceptance))
                            if plan.keep_params_every and draw % plan.keep_params_every == 0:
                                buffers[chain].positions.append(  # w_t: the pre-step state
                                    (draw, state.states[chain].position))
                    except Exception as error:  # a failing chain never loses the others' work
                        run.error = error
                state.states = states
                state.step += 1
                if state.step % _FLUSH_EVERY == 0 or state.step == plan.steps:
                    flush()
                    bar.update(state.step - bar.n)
                    if checkpoint is not None and (state.step - last_checkpoint >= checkpoint_every
                                                   or state.step == plan.steps):
                        checkpoint(state)
                        last_checkpoint = state.step
        except KeyboardInterrupt:
            for buffer in buffers:
                buffer.discard_from(state.step, plan)
            flush()
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
