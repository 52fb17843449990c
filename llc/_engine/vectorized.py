"""Blocks of steps as one compiled program over all chains (the vectorized path).

Written once against the backend's :class:`~llc._backend.ChainTransforms` (``vmap``,
``scan``, ``cond``, ``jit``) and its array operations, so any adapter that offers the
transforms gets the fast path. Per step and chain it does exactly what the sequential
runner does, with the same keys: the minibatch is the rows
``integers(fold_in(data_key, step), n, b)`` (drawn with replacement) or rows
``[i·b, (i+1)·b)`` of the permutation ``permutation(fold_in(data_key, epoch), n)`` (shuffled
epochs), the noise key is ``fold_in(noise_key, step)``, so the two paths draw the same numbers
and the tests compare them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._data import ArrayData
from .programs import program_cache
from .plan import ChainPlan
from .._tree import tree_map

__all__ = ["BlockKernel"]


class BlockStructure(NamedTuple):
    """What a block program is built from: the run's structure, no arrays and no numbers
    of the call, so that a cached program serves every call of the same structure."""

    num_data: int
    batch_size: int
    batches_per_epoch: int
    full_batch: bool
    with_replacement: bool
    num_burnin: int
    thin: int
    mala_every: int | None
    first_order: bool
    tuning: bool


class BlockKernel:
    """``run(states, start, stop)`` advances every chain through steps ``[start, stop)``.

    Parameters
    ----------
    plan
        The run's shared settings; ``plan.dataset`` must hold arrays (``ArrayData``).
    chain_keys
        One key per chain, as the sequential path receives them.

    Notes
    -----
    A sampler step from :func:`llc._programs.compiled_step` on an adapter that reuses
    programs carries its uncompiled ``program``, ``structure`` and ``numbers``: the block is
    then taken from the adapter's program cache (keyed by those and :class:`BlockStructure`)
    and the numbers and w* are passed to it as arguments. Any other step is traced into a
    block of this call alone.
    """

    def __init__(self, plan: ChainPlan, chain_keys: list[Any]) -> None:
        backend = plan.backend
        transforms = backend.chain_transforms
        if transforms is None:
            raise ValueError(f"the {backend.name} backend has no vectorized chains")
        dataset = plan.dataset
        if not isinstance(dataset, ArrayData):
            raise ValueError("vectorized chains draw their minibatches on the device: `data` "
                             "must be a tuple of arrays, not an iterable of batches")
        split = [backend.split(key, 2) for key in chain_keys]
        self.plan = plan
        self.dataset = dataset
        self.noise_keys = backend.stack([keys[0] for keys in split])
        self.data_keys = backend.stack([keys[1] for keys in split])
        self.arrays = tuple(dataset.arrays)
        self.num_chains = len(chain_keys)
        self._orders: Any = None
        self._next_step: int | None = None
        structure = BlockStructure(
            dataset.num_data, dataset.batch_size, dataset.batches_per_epoch,
            dataset.full_batch, dataset.with_replacement, plan.num_burnin, plan.thin,
            plan.mala_every, plan.first_order, plan.tuning_window is not None)
        step = plan.algorithm.step
        program = getattr(step, "program", None)
        if program is not None:
            self.numbers: Any = step.numbers
            self._block, self._first_orders = program_cache(backend).get(
                ("block", structure, step.structure, plan.batch_baseline, plan.warmup_baseline,
                 plan.devices),
                lambda: _compile_block(backend, structure, program, plan.batch_baseline,
                                       plan.warmup_baseline, plan.devices))
        else:
            self.numbers = None
            self._block, self._first_orders = _compile_block(
                backend, structure, lambda numbers, *args, diagnose: step(*args, diagnose),
                plan.batch_baseline, plan.warmup_baseline, plan.devices)
        self.center = plan.center
        if plan.devices is not None:  # the data and w* on every device once, not per block
            self.arrays = self._block.replicate(self.arrays)
            self.center = self._block.replicate(plan.center)

    def run(self, states: list[Any], start: int, stop: int) -> tuple[list[Any], dict[str, Any]]:
        """The chains' states at ``stop`` and each per-step value as a NumPy array
        (step, chain)."""
        plan, backend = self.plan, self.plan.backend
        like = plan.center
        per_epoch = self.dataset.batches_per_epoch
        if self._next_step != start:
            self._orders = self._first_orders(
                self.data_keys, backend.asarray(np.asarray(start // per_epoch), like=like),
                tuple(self.dataset.arrays))
        stacked = tree_map(  # on the params' device, as the block's outputs are: one compile
            lambda *leaves: backend.asarray(backend.stack(list(leaves)), like=like), *states)
        steps = backend.asarray(np.arange(start, stop), like=like)
        stacked, orders, values = self._block(self.numbers, self.center, self.noise_keys,
                                              self.data_keys, stacked, self._orders,
                                              self.arrays, steps)
        host = {name: backend.to_numpy(value).astype(np.float64) for name, value in values.items()}
        self._orders, self._next_step = orders, stop
        def chain_state(leaf: Any, chain: int) -> Any:  # split over devices: back on w*'s
            return leaf[chain] if plan.devices is None else backend.asarray(leaf[chain], like=like)

        unstacked = [tree_map(lambda leaf, chain=chain: chain_state(leaf, chain), stacked)
                     for chain in range(self.num_chains)]
        return unstacked, host


def _compile_block(backend: Any, structure: BlockStructure, step_fn: Callable[..., Any],
                   batch_baseline: Callable[..., Any] | None,
                   warmup_baseline: Callable[..., Any] | None,
                   devices: tuple[Any, ...] | None = None) -> tuple[Any, Any]:
    """``(block, first_orders)`` compiled: ``block(numbers, center, noise_keys, data_keys,
    states, orders, arrays, steps)`` runs ``step_fn(numbers, key, state, batch, diagnose=)``
    for every chain and step; ``first_orders(data_keys, epoch, arrays)`` the chains' epoch
    orders. Reads nothing but its arguments and ``structure``. With ``structure.tuning``
    every burn-in step is diagnosed and records ``warmup_baseline(center, batch)`` and the
    step's ``grad_power``. With ``devices`` the block runs split over them, each device over
    its share of the chains (:meth:`~llc._backend.Backend.over_devices`): a chain's
    numbers are those of the one-device program."""
    transforms = backend.chain_transforms
    batch_size, per_epoch = structure.batch_size, structure.batches_per_epoch

    def epoch_order(data_key: Any, epoch: Any, arrays: Any) -> Any:
        if structure.with_replacement:  # no permutation to carry: a placeholder of one row
            return backend.namespace(epoch).reshape(epoch, (1,))
        return backend.permutation(backend.fold_in(data_key, epoch), structure.num_data,
                                   arrays[0])

    def chain_step(noise_key: Any, data_key: Any, state: Any, order: Any, numbers: Any,
                   center: Any, arrays: Any, step: Any) -> tuple[Any, Any, dict[str, Any]]:
        if structure.full_batch:
            rows = None
        elif structure.with_replacement:
            rows = backend.integers(backend.fold_in(data_key, step), structure.num_data,
                                    batch_size, arrays[0])
        else:
            epoch, index = step // per_epoch, step % per_epoch
            order = transforms.cond(index == 0, lambda: epoch_order(data_key, epoch, arrays),
                                    lambda: order)
            xp = backend.namespace(order)
            rows = backend.take(order, index * batch_size + xp.arange(batch_size))
        batch = (tuple(arrays) if rows is None
                 else tuple(backend.take(array, rows) for array in arrays))
        key = backend.fold_in(noise_key, step)
        offset = step - structure.num_burnin
        recorded = (offset >= 0) & (offset % structure.thin == 0)
        warming = offset < 0

        def move(diagnose: bool) -> Any:
            def run() -> tuple[Any, Any]:
                new_state, info = step_fn(numbers, key, state, batch, diagnose=diagnose)
                nan = info.loss * float("nan")
                return new_state, info._replace(
                    mala_acceptance=nan if info.mala_acceptance is None else info.mala_acceptance,
                    grad_power=nan if info.grad_power is None else info.grad_power)
            return run

        diagnose = None
        if structure.mala_every is not None:
            diagnose = recorded & ((offset // structure.thin) % structure.mala_every == 0)
        if structure.tuning:
            diagnose = warming if diagnose is None else diagnose | warming
        if diagnose is None:
            new_state, info = move(False)()
        else:
            new_state, info = transforms.cond(diagnose, move(True), move(False))
        values = {"loss": info.loss, "distance": info.distance, "grad_norm": info.grad_norm,
                  "mala_acceptance": info.mala_acceptance}
        if structure.first_order:  # NaN from a sampler that does not report it
            values["first_order"] = (info.loss * float("nan") if info.first_order is None
                                     else info.first_order)

        def nothing() -> Any:
            return info.loss * float("nan")

        def baseline_at(when: Any, baseline: Callable[..., Any],
                        otherwise: Callable[[], Any]) -> Callable[[], Any]:
            return lambda: transforms.cond(when, lambda: baseline(center, batch), otherwise)

        baseline = nothing
        if batch_baseline is not None:
            baseline = baseline_at(recorded, batch_baseline, baseline)
        if structure.tuning and warmup_baseline is not None:
            baseline = baseline_at(warming, warmup_baseline, baseline)
        if baseline is not nothing:
            values["baseline_loss"] = baseline()
        if structure.tuning:
            values["grad_power"] = info.grad_power
        return new_state, order, values

    all_chains = transforms.vmap(chain_step, (0, 0, 0, 0, None, None, None, None))

    def block(numbers: Any, center: Any, noise_keys: Any, data_keys: Any, states: Any,
              orders: Any, arrays: Any, steps: Any) -> tuple[Any, Any, dict[str, Any]]:
        def body(carry: Any, step: Any) -> tuple[Any, dict[str, Any]]:
            states, orders = carry
            states, orders, values = all_chains(noise_keys, data_keys, states, orders,
                                                numbers, center, arrays, step)
            return (states, orders), values

        (states, orders), values = transforms.scan(body, (states, orders), steps)
        return states, orders, values

    first_orders = transforms.jit(transforms.vmap(epoch_order, (0, None, None)))
    if devices is not None:
        chains = (None, None, 0, 0, 0, 0, None, None)  # keys, states and orders per chain
        return backend.over_devices(block, devices, chains, (0, 0, 1)), first_orders
    return transforms.jit(block, donate_argnums=(4,)), first_orders
