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

from typing import Any

import numpy as np

from ._runner import ChainPlan
from ._tree import tree_map

__all__ = ["BlockKernel"]


class BlockKernel:
    """``run(states, start, stop)`` advances every chain through steps ``[start, stop)``.

    Parameters
    ----------
    plan
        The run's shared settings; ``plan.dataset`` must hold arrays (``ArrayData``).
    chain_keys
        One key per chain, as the sequential path receives them.
    """

    def __init__(self, plan: ChainPlan, chain_keys: list[Any]) -> None:
        backend = plan.backend
        transforms = backend.chain_transforms
        if transforms is None:
            raise ValueError(f"the {backend.name} backend has no vectorized chains")
        split = [backend.split(key, 2) for key in chain_keys]
        self.plan = plan
        self.noise_keys = backend.stack([keys[0] for keys in split])
        self.data_keys = backend.stack([keys[1] for keys in split])
        self.arrays = tuple(plan.dataset.arrays)
        self.num_chains = len(chain_keys)
        self._orders: Any = None
        self._next_step: int | None = None
        self._block = transforms.jit(self._make_block(transforms), donate_argnums=(2,))
        self._first_orders = transforms.jit(transforms.vmap(self._epoch_order, (0, None)))

    # ---- traced code --------------------------------------------------------------------
    def _epoch_order(self, data_key: Any, epoch: Any) -> Any:
        backend, dataset = self.plan.backend, self.plan.dataset
        if dataset.with_replacement:  # no permutation to carry: a placeholder of one row
            return backend.namespace(epoch).reshape(epoch, (1,))
        return backend.permutation(backend.fold_in(data_key, epoch), dataset.num_data,
                                   self.arrays[0])

    def _make_block(self, transforms: Any) -> Any:
        plan, backend = self.plan, self.plan.backend
        batch_size = plan.dataset.batch_size
        per_epoch = plan.dataset.batches_per_epoch
        step_fn = plan.algorithm.step

        def chain_step(noise_key: Any, data_key: Any, state: Any, order: Any, arrays: Any,
                       step: Any) -> tuple[Any, Any, dict[str, Any]]:
            if plan.dataset.full_batch:
                rows = None
            elif plan.dataset.with_replacement:
                rows = plan.dataset.rows(data_key, step)
            else:
                epoch, index = step // per_epoch, step % per_epoch
                order = transforms.cond(index == 0, lambda: self._epoch_order(data_key, epoch),
                                        lambda: order)
                xp = backend.namespace(order)
                rows = backend.take(order, index * batch_size + xp.arange(batch_size))
            batch = (tuple(arrays) if rows is None
                     else tuple(backend.take(array, rows) for array in arrays))
            key = backend.fold_in(noise_key, step)
            offset = step - plan.num_burnin
            recorded = (offset >= 0) & (offset % plan.thin == 0)

            def move(diagnose: bool) -> Any:
                def run() -> tuple[Any, Any]:
                    new_state, info = step_fn(key, state, batch, diagnose)
                    acceptance = info.mala_acceptance
                    if acceptance is None:
                        acceptance = info.loss * float("nan")
                    return new_state, info._replace(mala_acceptance=acceptance)
                return run

            if plan.mala_every is None:
                new_state, info = move(False)()
            else:
                diagnose = recorded & ((offset // plan.thin) % plan.mala_every == 0)
                new_state, info = transforms.cond(diagnose, move(True), move(False))
            values = {"loss": info.loss, "distance": info.distance, "grad_norm": info.grad_norm,
                      "mala_acceptance": info.mala_acceptance}
            if plan.first_order:  # NaN from a sampler that does not report it
                values["first_order"] = (info.loss * float("nan") if info.first_order is None
                                         else info.first_order)
            if plan.batch_baseline is not None:
                values["baseline_loss"] = transforms.cond(
                    recorded, lambda: plan.batch_baseline(plan.center, batch),
                    lambda: info.loss * float("nan"))
            return new_state, order, values

        all_chains = transforms.vmap(chain_step, (0, 0, 0, 0, None, None))

        def block(noise_keys: Any, data_keys: Any, states: Any, orders: Any, arrays: Any,
                  steps: Any) -> tuple[Any, Any, dict[str, Any]]:
            def body(carry: Any, step: Any) -> tuple[Any, dict[str, Any]]:
                states, orders = carry
                states, orders, values = all_chains(noise_keys, data_keys, states, orders,
                                                    arrays, step)
                return (states, orders), values

            (states, orders), values = transforms.scan(body, (states, orders), steps)
            return states, orders, values

        return block

    # ---- host side ----------------------------------------------------------------------
    def run(self, states: list[Any], start: int, stop: int) -> tuple[list[Any], dict[str, Any]]:
        """The chains' states at ``stop`` and each per-step value as a NumPy array
        (step, chain)."""
        plan, backend = self.plan, self.plan.backend
        like = plan.center
        per_epoch = plan.dataset.batches_per_epoch
        if self._next_step != start:
            self._orders = self._first_orders(
                self.data_keys, backend.asarray(np.asarray(start // per_epoch), like=like))
        stacked = tree_map(  # on the params' device, as the block's outputs are: one compile
            lambda *leaves: backend.asarray(backend.stack(list(leaves)), like=like), *states)
        steps = backend.asarray(np.arange(start, stop), like=like)
        stacked, orders, values = self._block(self.noise_keys, self.data_keys, stacked,
                                              self._orders, self.arrays, steps)
        host = {name: backend.to_numpy(value).astype(np.float64) for name, value in values.items()}
        self._orders, self._next_step = orders, stop
        unstacked = [tree_map(lambda leaf, chain=chain: leaf[chain], stacked)
                     for chain in range(self.num_chains)]
        return unstacked, host
