"""What every chain of one call shares (:class:`ChainPlan`), below the runner and the
vectorized blocks, which both read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._backend import Backend
from .._data import DataSource

__all__ = ["ChainPlan"]


@dataclass(frozen=True)
class ChainPlan:
    """What every chain of one call shares.

    ``trace_loss`` (set for an iterable of batches with the independent trace): the recorded
    loss of a draw is ``trace_loss(w_t, batch)`` on the next batch of a separate pass over the
    data instead of the step's own minibatch loss. ``first_order``: the steps report
    nβ ∇L_n(w*)·(w_t − w*) (``SampleInfo.first_order``), recorded at every draw.
    ``full_loss``: w ↦ L_n(w) on all the data, evaluated at every ``full_loss_every``-th
    draw. ``tuning_window`` (``step_size="auto"``): the burn-in runs in windows of this
    many steps, each burn-in step diagnosed and recording :attr:`warmup_fields`, with
    ``warmup_baseline(w*, batch)`` = L_B(w*) on the step's batch. ``probe``: w ↦ the
    per-sample losses on the probe data (a float64 NumPy array of ``probe_shape``), evaluated
    at every ``probe_every``-th draw. ``devices``: the vectorized blocks run split over these
    devices, each over its consecutive share of the chains (None: the params' device).
    """

    backend: Backend
    algorithm: Any
    dataset: DataSource
    center: Any
    num_burnin: int
    num_draws: int
    thin: int
    nbeta: float
    init_loss: float
    batch_baseline: Callable[..., Any] | None
    mala_every: int | None
    keep_params_every: int | None = None
    trace_loss: Callable[..., Any] | None = None
    first_order: bool = False
    full_loss: Callable[[Any], float] | None = None
    full_loss_every: int | None = None
    tuning_window: int | None = None
    warmup_baseline: Callable[..., Any] | None = None
    probe: Callable[[Any], Any] | None = None
    probe_every: int | None = None
    probe_shape: tuple[int, ...] = ()
    devices: tuple[Any, ...] | None = None

    @property
    def steps(self) -> int:
        return self.num_burnin + self.num_draws * self.thin

    @property
    def fields(self) -> tuple[str, ...]:
        """Per-draw statistics recorded on every draw."""
        return (("loss", "distance", "grad_norm")
                + (("first_order",) if self.first_order else ())
                + (("baseline_loss",) if self.batch_baseline else ()))

    @property
    def warmup_fields(self) -> tuple[str, ...]:
        """Per-step values recorded at burn-in steps: the loss and the distance, and while
        the step size is tuned also L_B(w*), the MALA acceptance, ``grad_norm`` and
        ``grad_power`` (NaN from a sampler that does not report it)."""
        return ("loss", "distance") + (
            ("baseline_loss", "mala_acceptance", "grad_norm", "grad_power")
            if self.tuning_window else ())

    @property
    def recorded_fields(self) -> tuple[str, ...]:
        """:attr:`fields`, and ``mala_acceptance`` when MALA diagnoses some draws."""
        return self.fields + (("mala_acceptance",) if self.mala_every else ())

    @property
    def num_kept_params(self) -> int:
        """Parameter draws kept per chain (every ``keep_params_every``-th draw)."""
        return 0 if not self.keep_params_every else -(-self.num_draws // self.keep_params_every)

    @property
    def num_probes(self) -> int:
        """Probe evaluations per chain (every ``probe_every``-th draw)."""
        return 0 if not (self.probe and self.probe_every) else -(-self.num_draws
                                                                 // self.probe_every)

    @property
    def num_full_losses(self) -> int:
        """Full-data losses per chain (every ``full_loss_every``-th draw)."""
        return 0 if not self.full_loss_every else -(-self.num_draws // self.full_loss_every)

    def draws_before(self, step: int) -> int:
        """Number of draws taken at steps < ``step``."""
        return max(0, -(-(step - self.num_burnin) // self.thin))

    def is_draw(self, step: int) -> bool:
        """Whether ``step`` is recorded as a draw."""
        return step >= self.num_burnin and (step - self.num_burnin) % self.thin == 0

    def _next_step_every(self, step: int, every: int | None) -> int | None:
        """The first step ≥ ``step`` whose draw index is a multiple of ``every``."""
        if not every:
            return None
        draw = self.draws_before(step)
        draw = -(-draw // every) * every
        return self.num_burnin + draw * self.thin if draw < self.num_draws else None

    def next_kept_step(self, step: int) -> int | None:
        """The first step ≥ ``step`` whose position is kept (``keep_params_every``)."""
        return self._next_step_every(step, self.keep_params_every)

    def next_full_loss_step(self, step: int) -> int | None:
        """The first step ≥ ``step`` where L_n(w_t) is evaluated (``full_loss_every``)."""
        return self._next_step_every(step, self.full_loss_every if self.full_loss else None)

    def next_probe_step(self, step: int) -> int | None:
        """The first step ≥ ``step`` where the probe losses are evaluated."""
        return self._next_step_every(step, self.probe_every if self.probe else None)

    def next_host_step(self, step: int) -> int | None:
        """The first step ≥ ``step`` that needs the host (a kept position, L_n(w_t) or the
        probe losses)."""
        steps = [s for s in (self.next_kept_step(step), self.next_full_loss_step(step),
                             self.next_probe_step(step)) if s is not None]
        return min(steps) if steps else None
