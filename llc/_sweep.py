"""One loop over the points of a sweep of estimates (:func:`llc.calibrate`'s grid,
:func:`llc.estimate_trajectory`'s checkpoints): each point's estimate, its warnings, its
failure or the interrupt that ends the sweep, in one place."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .result import LLCResult

__all__ = ["PointOutcome", "sweep"]

Point = TypeVar("Point")


@dataclass
class PointOutcome(Generic[Point]):
    """What one point of a sweep gave.

    Attributes
    ----------
    point
        The point, as the sweep received it.
    result
        Its estimate, or ``None`` when it raised (``error``) or was interrupted.
    error
        The exception of a failed point (one of the sweep's ``failures``), else ``None``.
    caught
        The warnings its estimate emitted, when the sweep records them (else empty).
    elapsed
        Seconds the point took.
    interrupted
        A ``KeyboardInterrupt`` ended the sweep at this point: before its estimate returned
        (``result`` is ``None``), or inside it (``result.complete`` is False).
    """

    point: Point
    result: LLCResult | None = None
    error: BaseException | None = None
    caught: list[warnings.WarningMessage] = field(default_factory=list)
    elapsed: float = 0.0
    interrupted: bool = False


def sweep(points: Iterable[Point], run: Callable[[Point], LLCResult], *,
          failures: tuple[type[BaseException], ...] = (Exception,),
          ignore: tuple[type[Warning], ...] = (), record: bool = False
          ) -> Iterator[PointOutcome[Point]]:
    """Run ``run(point)`` for each point in order, yielding one :class:`PointOutcome` each.

    Parameters
    ----------
    points
        The points, in the order they run.
    run
        Estimates one point (with its own progress bar off).
    failures
        Exceptions that fail a point and let the sweep go on; any other propagates.
    ignore
        Warning categories silenced while a point runs.
    record
        Record the other warnings into ``PointOutcome.caught`` (the caller re-emits them)
        instead of letting them through.

    Notes
    -----
    A ``KeyboardInterrupt`` ends the sweep: its last outcome has ``interrupted`` set (with the
    partial result when the estimate caught the interrupt and returned one).
    """
    for point in points:
        started = time.perf_counter()
        outcome = PointOutcome(point)
        with warnings.catch_warnings(record=record) as caught:
            if record:
                warnings.simplefilter("always")
            for category in ignore:
                warnings.simplefilter("ignore", category)
            try:
                outcome.result = run(point)
            except KeyboardInterrupt:
                outcome.interrupted = True
            except failures as error:
                outcome.error = error
        outcome.caught = list(caught or [])
        outcome.elapsed = time.perf_counter() - started
        if outcome.result is not None and not outcome.result.complete:
            outcome.interrupted = True  # the estimate caught the interrupt and returned
        yield outcome
        if outcome.interrupted:
            return
