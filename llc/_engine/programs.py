"""Compiled programs reused across calls.

A compiling framework (JAX, TensorFlow) traces and compiles a program the first time it is
called with new shapes; a *new* Python function, even one built from the same code, is a
new program. So everything an ``llc.estimate`` call compiles is built from the run's
*structure* only — the sampler's kind and its non-numeric options, the loss function, the
parameter and batch structure, which optional quantities are present — and takes the run's
numbers (w*, nβ, γ, ∇L_n(w*), the step size and the sampler's other numeric
hyper-parameters) as array arguments. Programs are kept in a small least-recently-used
:class:`ProgramCache` per adapter, so a second identical call, ``step_size="auto"``'s
windows, ``llc.calibrate``'s grid and ``llc.estimate_trajectory``'s checkpoints reuse them.

The invariant that makes this sound: a cached program reads nothing of the call that built
it except its key. :func:`run_numbers` therefore splits every value the sampler and the
posterior read into a static part (the key) and a dynamic part (arguments), and
:func:`sampler_program` builds the step from the key alone.
"""

from __future__ import annotations

import collections
import numbers
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import numpy as np

from ..posterior import LocalizedPosterior
from ..samplers import diagnosable

__all__ = ["ProgramCache", "RunNumbers", "compiled_step", "program_cache", "run_numbers",
           "sampler_program", "split_arguments"]

#: Programs kept per cache; the least recently used beyond this are dropped (a program holds
#: its loss function and, through it, the user's model).
CACHE_SIZE = 16


class ProgramCache:
    """A bounded least-recently-used map from a hashable key to a compiled program."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._programs: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self.misses = 0

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The program under ``key``, built with ``build()`` on a miss."""
        try:
            program = self._programs.pop(key)
        except KeyError:
            self.misses += 1
            program = build()
        except TypeError:  # an unhashable part of the key (e.g. a loss_fn with __eq__)
            self.misses += 1
            return build()
        self._programs[key] = program
        while len(self._programs) > self.size:
            self._programs.popitem(last=False)
        return program

    def clear(self) -> None:
        """Drop every program (and the references they hold)."""
        self._programs.clear()


def split_arguments(arguments: dict[str, Any]) -> tuple[tuple[tuple[str, Any], ...],
                                                        dict[str, Any]]:
    """``(static, dynamic)``: booleans, strings and ``None`` are part of a program's
    structure; numbers and NumPy arrays are its arguments."""
    static, dynamic = [], {}
    for name, value in sorted(arguments.items()):
        if isinstance(value, (bool, str)) or value is None:
            static.append((name, value))
        elif isinstance(value, (numbers.Real, np.ndarray)):
            dynamic[name] = value
        else:
            raise TypeError(f"sampler argument {name!r} is a {type(value).__name__}; expected "
                            "a number, an array, a flag or a string")
    return tuple(static), dynamic


class RunNumbers(NamedTuple):
    """The numbers of a run a compiled sampler step takes as arguments (backend arrays)."""

    center: Any
    nbeta: Any
    localization: Any  # None when γ = 0, which is then part of the structure
    slope: Any
    sampler: dict[str, Any]


def run_numbers(posterior: LocalizedPosterior, settings: Any
                ) -> tuple[tuple[Any, ...], RunNumbers]:
    """``(structure, numbers)`` of a posterior and sampler settings: ``structure`` keys the
    compiled step, ``numbers`` are its arguments as arrays of the posterior's backend (the
    dtype of w*, so that a program never sees a new dtype)."""
    backend, center = posterior.backend, posterior.center
    static, dynamic = split_arguments(settings.kernel_arguments())
    dtype = backend.to_numpy(center[:1]).dtype

    def array(value: Any) -> Any:
        return backend.asarray(np.asarray(value, dtype=dtype), like=center)

    localized = posterior.localization != 0
    structure = (type(settings), static, posterior.loss_and_grad, localized,
                 posterior.slope is not None)
    numbers = RunNumbers(
        center=center,
        nbeta=array(posterior.nbeta),
        localization=array(posterior.localization) if localized else None,
        slope=posterior.slope,
        sampler={name: array(value) for name, value in dynamic.items()},
    )
    return structure, numbers


def sampler_program(structure: tuple[Any, ...], backend: Any) -> Callable[..., Any]:
    """``step(numbers, key, state, batch, diagnose)``: the sampler's step built from the
    ``structure`` of :func:`run_numbers` alone (its cache key), the run's numbers
    (:class:`RunNumbers`) an argument, for a program that outlives the call."""
    kind, static, loss_and_grad = structure[:3]

    def step(numbers: RunNumbers, key: Any, state: Any, batch: Any, diagnose: bool) -> Any:
        localization = 0.0 if numbers.localization is None else numbers.localization
        traced = LocalizedPosterior(loss_and_grad, numbers.center, numbers.nbeta, localization,
                                    backend, slope=numbers.slope)
        step = diagnosable(kind.step, traced, {**dict(static), **numbers.sampler})
        return step(key, state, batch, diagnose)

    return step


_CACHES: dict[str, ProgramCache] = {}


def program_cache(backend: Any) -> ProgramCache:
    """The cache of compiled programs of ``backend`` (one per adapter)."""
    return _CACHES.setdefault(backend.name, ProgramCache())


def compiled_step(backend: Any, settings: Any, posterior: LocalizedPosterior
                  ) -> Callable[..., Any]:
    """``step(key, state, batch, diagnose=False)`` of ``settings`` on ``posterior``, compiled.

    An adapter that reuses programs (``backend.reuses_programs``) gets the step from its
    :class:`ProgramCache`, keyed by the run's structure, with the run's numbers bound as
    arguments; any other adapter, or sampler settings without ``kernel_arguments`` (a
    user's own sampler), gets ``backend.compile`` of the bound step, as built.
    """
    if not backend.reuses_programs \
            or not callable(getattr(settings, "kernel_arguments", None)):
        return backend.compile(settings.build(posterior).step)
    structure, numbers = run_numbers(posterior, settings)
    uncompiled = sampler_program(structure, backend)
    program = program_cache(backend).get(("step", *structure),
                                         lambda: backend.compile(uncompiled))

    def step(key: Any, state: Any, batch: Any, diagnose: bool = False) -> Any:
        return program(numbers, key, state, batch, diagnose=diagnose)

    # for a program that runs the step inside its own (llc._vectorized's blocks)
    step.program, step.structure, step.numbers = uncompiled, structure, numbers  # type: ignore[attr-defined]
    return step
