"""PyTorch adapter: params are a dict (or list/tuple) of tensors on one device, CPU or CUDA.

Gradients come from ``torch.autograd`` on a flat parameter vector whose views are handed to
``loss_fn``; noise, minibatch indices and the sampler state live on the params' device.

Chains run one after the other by default (``chain_method="auto"``: on this project's CPU the
eager ``torch.func.vmap`` step costs more than it saves at the default 4 chains; it pays for
many chains of small models, docs/benchmarks.md). With ``chain_method="vectorized"`` every
step of all chains is one ``torch.func.vmap`` call (:class:`TorchTransforms`), drawing
exactly the sequential path's random numbers.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import array_api_compat.torch as torch_namespace
import numpy as np
import torch

from llc import _rng
from llc._backend import BackendBase
from llc._restrict import ComponentMask, block_mask
from llc._tree import tree_builder, tree_flatten, tree_map

from ._common import (check_floating, check_reduction as _check_reduction, leaf_paths,
                      next_token, split_last, unpack_checked)

__all__ = ["attention_heads", "backend", "causal_lm_loss", "from_module", "next_token"]

_GENERATORS = threading.local()


# ---- keyed random numbers under torch.func.vmap ------------------------------------------
# A key is a Python int (sequential path) or, in the vectorized path, an int64 tensor that
# vmap batches over the chains. torch's random ops take one generator, not one per chain, and
# vmap refuses them outright; so a draw from a batched key leaves vmap for a moment: the key
# tensor is unwrapped, each chain's numbers are drawn from its own key exactly as the
# sequential path draws them, and the stacked result is handed back to vmap as one batched
# tensor. That takes functorch's (private) wrapping functions: without them, torch has no
# vectorized chains (``TorchBackend.chain_transforms`` is None) and the sequential path runs.
def _functorch_hooks() -> tuple[Any, Any, Any] | None:
    try:
        from torch._C import _functorch as functorch

        guard = torch._C._ExcludeDispatchKeyGuard
        vmap_mode = torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchVmapMode)
    except (ImportError, AttributeError):
        return None
    needed = ("is_batchedtensor", "maybe_get_level", "_unwrap_batched", "_add_batch_dim")
    return (functorch, guard, vmap_mode) if all(hasattr(functorch, n) for n in needed) else None


_FUNCTORCH = _functorch_hooks()


def _is_batched(x: Any) -> bool:
    """Whether ``x`` is a tensor batched by an enclosing ``torch.func.vmap``."""
    return (_FUNCTORCH is not None and isinstance(x, torch.Tensor)
            and bool(_FUNCTORCH[0].is_batchedtensor(x)))


def _per_chain(key: torch.Tensor, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``draw(k)`` for every chain's key ``k`` of the vmap-batched ``key``, stacked and
    returned batched like ``key``."""
    assert _FUNCTORCH is not None  # only reached under the vectorized path's vmap
    functorch, guard, vmap_mode = _FUNCTORCH
    level = functorch.maybe_get_level(key)
    keys, axis = functorch._unwrap_batched(key, level)
    with guard(vmap_mode):  # outside vmap's randomness check: one draw per chain
        stacked = torch.stack([draw(int(k)) for k in keys.movedim(axis, 0).tolist()])
    return functorch._add_batch_dim(stacked, 0, level)


def _gather_rows_per_chain(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` under vmap when one of the two is batched over the chains: each chain's
    minibatch of a shared ``x`` (batched ``rows``: one ``index_select`` of all the chains'
    rows), or the same rows of each chain's ``x`` (its epoch order: ``index_select`` along
    the axis after the chains'). vmap's own batching rule for ``index_select`` took 2-3x as
    long in both cases (16 chains of the tiny model, CPU)."""
    assert _FUNCTORCH is not None  # only reached under the vectorized path's vmap
    functorch = _FUNCTORCH[0]
    if _is_batched(rows):
        level = functorch.maybe_get_level(rows)
        chain_rows, axis = functorch._unwrap_batched(rows, level)
        chain_rows = chain_rows.movedim(axis, 0)
        gathered = torch.index_select(x, 0, chain_rows.reshape(-1).to(x.device))
        gathered = gathered.view(*chain_rows.shape, *x.shape[1:])
    else:
        level = functorch.maybe_get_level(x)
        chain_x, axis = functorch._unwrap_batched(x, level)
        gathered = torch.index_select(chain_x.movedim(axis, 0), 1, rows.to(x.device))
    return functorch._add_batch_dim(gathered, 0, level)


_SLOW_OPS: set[str] = set()  # ops already reported as lacking a vmap batching rule
_NO_BATCHING_RULE = "There is a performance drop because we have not yet implemented the " \
    "batching rule for "


def _summarize_vmap_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Re-emit the warnings of a vmapped call, except torch's "no batching rule" warnings
    (one per op and call: thousands in a run), which become one llc warning per new op."""
    new_ops = []
    for message in caught:
        text = str(message.message)
        if text.startswith(_NO_BATCHING_RULE):
            op = text[len(_NO_BATCHING_RULE):].split(".")[0].strip()
            if op not in _SLOW_OPS:
                _SLOW_OPS.add(op)
                new_ops.append(op)
        else:
            warnings.warn_explicit(message.message, message.category, message.filename,
                                   message.lineno)
    if new_ops:
        warnings.warn(
            f"chain_method='vectorized': torch.func.vmap has no batching rule for "
            f"{', '.join(new_ops)} and runs it chain by chain inside each step; a model "
            "built on such ops (attention layers often are) is usually faster with "
            "chain_method='sequential', the default for torch", UserWarning, stacklevel=2)


class TorchTransforms:
    """The vectorized runner's transformations in eager PyTorch (:class:`llc.ChainTransforms`).

    ``vmap`` is ``torch.func.vmap``; ``scan`` is a Python loop over the steps of a block (their
    indices reach the host once per block); ``cond`` is a Python ``if`` (every predicate of
    the runner is a Python bool here); ``jit`` is the identity (``torch.compile`` costs tens of
    seconds per call for a few per cent, docs/design.md §6).
    """

    def vmap(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
        mapped = torch.func.vmap(fn, in_dims=in_axes)

        def call(*args: Any) -> Any:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = mapped(*args)
            _summarize_vmap_warnings(caught)
            return out

        return call

    def scan(self, body: Callable[[Any, Any], tuple[Any, Any]], carry: Any, xs: Any
             ) -> tuple[Any, Any]:
        outputs = []
        for x in (xs.tolist() if isinstance(xs, torch.Tensor) else list(xs)):
            carry, output = body(carry, x)
            outputs.append(output)
        return carry, tree_map(lambda *steps: torch.stack(steps), *outputs)

    def cond(self, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
        return true_fn() if bool(pred) else false_fn()

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()
            ) -> Callable[..., Any]:
        return fn

    def worthwhile(self, num_chains: int, like: torch.Tensor) -> bool:
        return False  # "auto" runs torch chains sequentially: see the module docstring


class TorchProcessGroup:
    """The ranks of ``torch.distributed``'s default group (``torchrun``: gloo on CPUs, nccl on
    GPUs), for :meth:`TorchBackend.process_group`."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def all_gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered


class TorchBackend(BackendBase):
    """Adapter for ``torch.Tensor`` parameters: eager (no compile, no program reuse) with
    llc's host keys (:class:`~llc._backend.BackendBase`), batched over chains inside
    ``torch.func.vmap``."""

    name = "torch"
    chain_transforms = TorchTransforms() if _FUNCTORCH is not None else None

    def process_group(self) -> TorchProcessGroup | None:
        """The default group when ``torch.distributed`` is initialized with more than one
        process (``torchrun``, then ``init_process_group``), else None."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return TorchProcessGroup()
        return None

    # ---- arrays -------------------------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor)

    def namespace(self, x: Any) -> Any:
        return torch_namespace

    def asarray(self, x: Any, *, like: torch.Tensor) -> torch.Tensor:
        tensor = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if tensor.is_floating_point():
            return tensor.to(device=like.device, dtype=like.dtype)
        return tensor.to(like.device)

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None
                   ) -> torch.Tensor:
        tensor = torch.tensor(np.asarray(x))
        return tensor.to(device=device, dtype=getattr(torch, dtype) if dtype else None)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        if x.dtype == torch.bfloat16:  # NumPy has no bfloat16: float32 holds it exactly
            x = x.float()
        return x.detach().to("cpu").numpy().copy()

    def stack(self, xs: list[Any]) -> torch.Tensor:
        if all(isinstance(x, int) for x in xs):  # keys: int64 on the host
            return torch.tensor(xs, dtype=torch.int64)
        return torch.stack(xs)

    def row_buffer(self, num_rows: int, num_columns: int) -> _TensorRows:
        return _TensorRows(num_rows, num_columns)

    def take(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # index_select: the same rows as x[indices], about 3x faster on CPU for a minibatch
        if _is_batched(indices) != _is_batched(x):  # inside the vectorized path's vmap
            return _gather_rows_per_chain(x, indices)
        return torch.index_select(x, 0, indices.to(x.device))

    def linear_combination(self, *terms: tuple[Any, torch.Tensor], reuse: int | None = None
                           ) -> torch.Tensor:
        # torch.add(x, y, alpha=c) is x + c·y in one kernel; the later terms are added in
        # place into that fresh tensor (or into the reusable one): one pass per term.
        if reuse is not None and terms[reuse][1].dtype == terms[0][1].dtype:
            coefficient, total = terms[reuse]
            if not (_is_number(coefficient) and coefficient == 1):
                total.mul_(coefficient)
            rest = list(terms[:reuse] + terms[reuse + 1:])
        else:
            (first_coefficient, first), *rest = terms
            if rest and _is_number(rest[0][0]) and _is_number(first_coefficient) \
                    and first_coefficient == 1:
                (coefficient, array), *rest = rest
                total = torch.add(first, array, alpha=coefficient)
            else:
                total = torch.mul(first, first_coefficient)
        for coefficient, array in rest:
            if _is_number(coefficient):
                total.add_(array, alpha=coefficient)
            else:
                total.add_(array * coefficient)
        return total

    def describe(self, x: torch.Tensor) -> dict[str, str]:
        return {"device": str(x.device), "dtype": str(x.dtype).removeprefix("torch.")}

    # ---- params -------------------------------------------------------------------------
    def data_like(self, params: Any) -> torch.Tensor:
        leaves = tree_flatten(params)[0]
        return torch.zeros((), dtype=_promoted(leaves), device=leaves[0].device)

    def ravel(self, params: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
        leaves, treedef = tree_flatten(params)
        check_floating(
            leaves,
            leaf_paths(params),
            lambda leaf: leaf.is_floating_point(),
            lambda leaf: leaf.numel(),
        )
        devices = {leaf.device for leaf in leaves}
        if len(devices) > 1:
            raise ValueError(f"`params` are spread over devices {sorted(map(str, devices))}; "
                             "expected all on one device")
        # the sampling state: at least float32 (llc._backend.ravel)
        dtype = torch.promote_types(_promoted(leaves), torch.float32)
        shapes = [tuple(leaf.shape) for leaf in leaves]
        dtypes = [leaf.dtype for leaf in leaves]
        sizes = [math.prod(shape) for shape in shapes]
        with torch.no_grad():
            flat = torch.cat([leaf.detach().reshape(-1).to(dtype) for leaf in leaves])  # a copy

        build = tree_builder(treedef)
        if all(leaf_dtype == dtype for leaf_dtype in dtypes):
            def unravel(vector: torch.Tensor) -> Any:
                return build([piece.view(shape) for piece, shape
                              in zip(vector.split_with_sizes(sizes), shapes)])
        else:
            def unravel(vector: torch.Tensor) -> Any:
                return build([piece.view(shape).to(leaf_dtype) for piece, shape, leaf_dtype
                              in zip(vector.split_with_sizes(sizes), shapes, dtypes)])

        return flat, unravel

    # ---- loss and grad ------------------------------------------------------------------
    def value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def scalar_loss(flat: torch.Tensor, batch: Any) -> torch.Tensor:
            return _check_loss(loss_fn(unravel(flat), batch), flat)

        def loss_and_grad(flat: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if _is_batched(flat):  # inside the vectorized path's vmap: functorch's grad
                with torch.enable_grad():
                    grad, loss = torch.func.grad_and_value(scalar_loss)(flat, batch)
                return loss, grad
            with torch.enable_grad():
                leaf = flat.detach().requires_grad_(True)
                loss = _check_loss(loss_fn(unravel(leaf), batch), leaf)
                if not loss.requires_grad:
                    raise TypeError(
                        "`loss_fn` returned a loss that is not differentiable with respect to "
                        "the params it was given (no autograd graph): compute the loss from "
                        "the `params` argument with differentiable torch operations"
                    )
                (grad,) = _gradient(loss, leaf)
            if grad is None:
                raise TypeError(
                    "`loss_fn` does not use the `params` it is given (the gradient is "
                    "disconnected); call the model with those params, e.g. through "
                    "torch.func.functional_call or llc.backends.torch.from_module"
                )
            return loss.detach(), grad

        return loss_and_grad

    def value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def loss_only(flat: torch.Tensor, batch: Any) -> torch.Tensor:
            with torch.no_grad():
                return _check_loss(loss_fn(unravel(flat), batch), flat).detach()

        return loss_only

    # ---- rng ----------------------------------------------------------------------------
    def split(self, key: Any, num: int) -> list[Any]:
        if _is_batched(key):
            keys = _per_chain(key, lambda k: torch.tensor(_rng.split(k, num), dtype=torch.int64))
            return [keys[index] for index in range(num)]
        return _rng.split(int(key), num)

    def fold_in(self, key: Any, data: Any) -> Any:
        if _is_batched(key):
            return _per_chain(key, lambda k: torch.tensor(_rng.fold_in(k, int(data))))
        return _rng.fold_in(int(key), int(data))

    def _generator(self, key: int, device: torch.device) -> torch.Generator:
        # One generator per thread and device, re-seeded per key: about half the cost of a
        # new generator per step, with the same numbers.
        cache = _GENERATORS.__dict__.setdefault("by_device", {})
        generator = cache.get(device)
        if generator is None:
            generator = cache[device] = torch.Generator(device=device)
        return generator.manual_seed(key)

    def normal(self, key: Any, like: torch.Tensor) -> torch.Tensor:
        shape, dtype, device = like.shape, like.dtype, like.device  # a batched like: one chain's

        def draw(one_key: int) -> torch.Tensor:
            return torch.randn(shape, generator=self._generator(one_key, device), dtype=dtype,
                               device=device)

        return _per_chain(key, draw) if _is_batched(key) else draw(int(key))

    def permutation(self, key: Any, n: int, like: torch.Tensor) -> torch.Tensor:
        device = like.device

        def draw(one_key: int) -> torch.Tensor:
            return torch.randperm(n, generator=self._generator(one_key, device), device=device)

        return _per_chain(key, draw) if _is_batched(key) else draw(int(key))

    def integers(self, key: Any, n: int, size: int, like: torch.Tensor) -> torch.Tensor:
        device = like.device

        def draw(one_key: int) -> torch.Tensor:
            return torch.randint(n, (size,), generator=self._generator(one_key, device),
                                 device=device)

        return _per_chain(key, draw) if _is_batched(key) else draw(int(key))

    @contextlib.contextmanager
    def isolated_global_rng(self, seed: int) -> Iterator[None]:
        # CUDA generators are forked and seeded only when CUDA is already in use: touching
        # them would initialize CUDA (seconds) in a CPU-only run.
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.default_generator.manual_seed(seed)
            for device in cuda_devices:
                torch.cuda.default_generators[device].manual_seed(seed)
            yield


class _TensorRows:
    """A table allocated at the first row and written in place: on an accelerator a tensor on
    the values' device (no host synchronization per step), on the CPU a NumPy table that
    takes each value as a float (cheaper per step than stacking and copying a row,
    docs/benchmarks.md)."""

    def __init__(self, num_rows: int, num_columns: int) -> None:
        self._shape = (num_rows, num_columns)
        self._table: torch.Tensor | None = None
        self._host: np.ndarray | None = None

    def set(self, index: int, values: list[torch.Tensor]) -> None:
        if self._host is None and self._table is None and values[0].device.type == "cpu":
            self._host = np.full(self._shape, np.nan)
        if self._host is not None:
            self._host[index, :len(values)] = [value.item() for value in values]
            return
        if self._table is None:
            dtype = torch.float32
            for value in values:
                dtype = torch.promote_types(dtype, value.dtype)
            self._table = torch.full(self._shape, math.nan, dtype=dtype, device=values[0].device)
        row = torch.stack([value.to(self._table.dtype) for value in values])
        self._table[index, :len(values)].copy_(row)

    def to_numpy(self) -> np.ndarray:
        if self._host is not None:
            return self._host.copy()
        if self._table is None:
            return np.full(self._shape, np.nan)
        return self._table.to("cpu").numpy().astype(np.float64)


def _engine_run_backward() -> Callable[..., Any] | None:
    try:
        from torch.autograd.variable import Variable

        return Variable._execution_engine.run_backward
    except (ImportError, AttributeError):
        return None


_RUN_BACKWARD = _engine_run_backward()


def _gradient(loss: torch.Tensor, leaf: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad(loss, leaf, allow_unused=True)`` for a scalar ``loss``, calling
    the autograd engine directly as that function does, without its argument handling (its
    cost: docs/benchmarks.md, "Where a step's time goes"); the public function where the
    engine's entry point is missing."""
    if _RUN_BACKWARD is None:
        return torch.autograd.grad(loss, leaf, allow_unused=True)
    return _RUN_BACKWARD((loss,), (torch.ones_like(loss),), False, False, (leaf,), True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _promoted(leaves: list[torch.Tensor]) -> torch.dtype:
    """The leaves' common dtype (torch's promotion)."""
    dtype = leaves[0].dtype
    for leaf in leaves[1:]:
        dtype = torch.promote_types(dtype, leaf.dtype)
    return dtype


def _check_loss(loss: Any, flat: torch.Tensor) -> torch.Tensor:
    """The scalar loss, widened to the sampling state's dtype when narrower (a bfloat16
    model's loss is accumulated and differenced in float32)."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"`loss_fn` must return a torch scalar tensor; got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"`loss_fn` must return a scalar loss (the mean over the batch); got shape "
            f"{tuple(loss.shape)}"
        )
    if not loss.is_floating_point():
        raise TypeError(f"`loss_fn` must return a floating-point loss; got dtype {loss.dtype}")
    return loss.reshape(()).to(torch.promote_types(loss.dtype, flat.dtype))


def from_module(
    module: torch.nn.Module,
    criterion: Callable[[Any, Any], torch.Tensor],
    *,
    trainable_only: bool = True,
    unpack: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]] | None = None,
) -> tuple[Callable[[dict[str, torch.Tensor], Any], torch.Tensor], dict[str, torch.Tensor]]:
    """``(loss_fn, params)`` for a ``torch.nn.Module`` and a mean-reduction criterion.

    ``loss_fn(params, batch)`` runs ``criterion(module(*batch[:-1]), batch[-1])`` with the
    given params (with ``unpack``: ``args, kwargs, targets = unpack(batch)`` and
    ``criterion(module(*args, **kwargs), targets)``). It runs a private copy of the module whose
    parameter slots it points at the given tensors on each call (what
    :func:`torch.func.functional_call` does, without its per-call swapping in and out of the user's
    module, whose cost docs/benchmarks.md measures), so neither the module's parameters nor its
    buffers are ever written. The copy shares no storage with the module: ``params`` (w*, a detached
    copy of the module's named parameters), the parameters left fixed, and the buffers (batch-norm
    statistics) are copies made once. A module that cannot be deep-copied falls back to
    :func:`torch.func.functional_call` on the module itself. Like that function, ``loss_fn``
    is not safe to call from two threads at once.

    Parameters
    ----------
    module
        The trained model, in the mode it should be evaluated in (use ``module.eval()``
        first if it has dropout or batch norm: llc never changes the training flag).
    criterion
        ``criterion(outputs, targets)`` returning the mean per-sample negative
        log-likelihood, e.g. ``torch.nn.functional.cross_entropy``.
    trainable_only
        Sample only parameters with ``requires_grad=True`` (the others stay fixed at w*).
    unpack
        ``unpack(batch) -> (args, kwargs, targets)``: how a batch maps to the module's
        positional and keyword inputs and the criterion's targets, for batches that are not
        ``(inputs..., targets)`` tuples: dicts of a tokenizer or a ``datasets`` loader, token
        sequences whose targets are the next tokens. :func:`next_token` makes one for causal
        language models (use it with :func:`causal_lm_loss`). Default: ``(batch[:-1], {},
        batch[-1])``; a dict batch without ``unpack`` is an error that says so.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> loss_fn, params = llc.backends.torch.from_module(model, torch.nn.functional.mse_loss)
    >>> sorted(params)
    ['0.bias', '0.weight', '2.bias', '2.weight']
    >>> x, y = torch.randn(1000, 4), torch.randn(1000, 3)
    >>> result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4, num_draws=100)

    A causal language model on a DataLoader of tokenizer dicts (``input_ids``,
    ``attention_mask``), the mean cross-entropy of every next token that is not padding
    (docs/language_models.md)::

        loss_fn, params = from_module(model, causal_lm_loss, unpack=next_token())
        result = llc.estimate(loss_fn, params, loader, num_data=num_tokens)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"`module` must be a torch.nn.Module; got {type(module).__name__}")
    if not callable(criterion):
        raise TypeError("`criterion` must be callable as criterion(outputs, targets)")
    if unpack is not None and not callable(unpack):
        raise TypeError("`unpack` must be callable as unpack(batch) -> (args, kwargs, targets); "
                        f"got {type(unpack).__name__}")
    split = split_last if unpack is None else unpack_checked(unpack)
    with torch.no_grad():
        params = {
            name: parameter.detach().clone()
            for name, parameter in module.named_parameters()
            if parameter.requires_grad or not trainable_only
        }
        fixed = {
            name: parameter.detach().clone()
            for name, parameter in module.named_parameters()
            if name not in params
        }
        buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    if module.training and any(
        isinstance(sub, (torch.nn.modules.dropout._DropoutNd,
                         torch.nn.modules.batchnorm._BatchNorm))
        for sub in module.modules()
    ):
        warnings.warn(
            "`module` is in training mode and has dropout or batch-norm layers, which make the "
            "loss random or batch-dependent; call module.eval() before estimating",
            UserWarning,
            stacklevel=2,
        )

    replica = _replica(module, {**params, **fixed}, buffers)
    if replica is None:
        def functional_loss_fn(sampled: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            args, kwargs, targets = split(batch)
            outputs = torch.func.functional_call(
                module, {**fixed, **buffers, **sampled}, tuple(args), kwargs, strict=False
            )
            return criterion(outputs, targets)

        return functional_loss_fn, params

    slots = _parameter_slots(module, replica, names=params)

    def loss_fn(sampled: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        args, kwargs, targets = split(batch)
        for name, places in slots:
            try:
                value = sampled[name]
            except KeyError:
                raise KeyError(f"`params` given to loss_fn lacks the parameter {name!r}; pass "
                               "a dict with the keys of from_module's params") from None
            for parameters, attribute in places:
                parameters[attribute] = value
        try:
            return criterion(replica(*args, **kwargs), targets)
        finally:  # hold no sampled tensor (a chain's position) beyond the call
            for name, places in slots:
                for parameters, attribute in places:
                    parameters[attribute] = params[name]

    return loss_fn, params


def causal_lm_loss(outputs: Any, targets: Any, *, reduction: str = "mean") -> Any:
    """The mean next-token cross-entropy: over every target token, or over the tokens whose
    mask is 1 when ``targets`` is ``(tokens, mask)`` (as :func:`next_token` gives for padded
    batches). ``outputs`` are logits (batch, length, vocabulary), or an object with a
    ``logits`` attribute (Hugging Face) or a tuple whose first element they are.

    With ``reduction="none"`` it returns ``(losses, mask)`` instead, both (batch, length):
    the per-token losses and the 0/1 weights (ones without a mask), for per-token
    observables; llc's ``loss_fn`` needs the mean.

    This is the per-token convention for n: pass ``nbeta`` from the number of tokens
    (docs/language_models.md).
    """
    logits = getattr(outputs, "logits", None)
    if logits is None:
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    tokens, weights = targets if isinstance(targets, (tuple, list)) else (targets, None)
    _check_reduction(reduction)
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
    if reduction == "none":
        shaped = losses.reshape(tokens.shape)
        return shaped, (torch.ones_like(shaped) if weights is None
                        else weights.reshape(tokens.shape).to(shaped.dtype))
    if weights is None:
        return losses.mean()
    weights = weights.reshape(-1).to(losses.dtype)
    return (losses * weights).sum() / weights.sum()


def _replica(module: torch.nn.Module, parameters: dict[str, torch.Tensor],
             buffers: dict[str, torch.Tensor]) -> torch.nn.Module | None:
    """A deep copy of ``module`` whose parameters and buffers are the given tensors (by name;
    tied parameters stay tied), made without copying the module's own weights again; ``None``
    when the module cannot be deep-copied."""
    replacements: dict[int, Any] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        replacements.setdefault(id(parameter), parameters.get(name))
    for name, buffer in module.named_buffers(remove_duplicate=False):
        replacements.setdefault(id(buffer), buffers.get(name))
    if any(value is None for value in replacements.values()):
        return None
    try:
        return copy.deepcopy(module, replacements)
    except Exception:  # noqa: BLE001  (whatever the module's own __deepcopy__ raises)
        return None


def _parameter_slots(module: torch.nn.Module, replica: torch.nn.Module, names: Any
                     ) -> list[tuple[str, list[tuple[dict[str, Any], str]]]]:
    """For each parameter name in ``names``, the ``(submodule._parameters, attribute)`` slots
    of ``replica`` that hold it (several when the parameter is tied)."""
    canonical = {id(parameter): name for name, parameter in module.named_parameters()}
    slots: dict[str, list[tuple[dict[str, Any], str]]] = {name: [] for name in names}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        owner, _, attribute = name.rpartition(".")
        key = canonical[id(parameter)]
        if key in slots:
            slots[key].append((replica.get_submodule(owner)._parameters, attribute))
    return list(slots.items())


backend = TorchBackend()


def attention_heads(
    model: torch.nn.Module,
    *,
    num_heads: int | None = None,
    q: str | None = None,
    k: str | None = None,
    v: str | None = None,
    qkv: str | None = None,
    o: str | None = None,
) -> dict[str, ComponentMask]:
    """Per-head components of a model's attention, for ``llc.estimate(..., restrict=...)``.

    A head is the slices of the projections that only it uses: its rows of the query, key
    and value weights and biases (its ``head_dim`` output features) and its columns of the
    output projection's weight (its input features); the output bias is shared and belongs to
    no head. Join heads with ``|``.

    Parameters
    ----------
    model
        The module whose parameters ``from_module(model, ...)`` samples: the masks are keyed
        by ``model.named_parameters()`` names.
    num_heads
        The number of heads of a hand-written attention (``q``/``k``/``v``/``o`` or
        ``qkv``/``o`` given); read from ``torch.nn.MultiheadAttention`` otherwise.
    q, k, v, qkv, o
        For hand-written attention: the names (``model.get_submodule``) of its
        ``torch.nn.Linear`` projections — separate ``q``, ``k``, ``v``, or a fused ``qkv``
        whose output features are the queries, then the keys, then the values (each
        ``num_heads × head_dim``, head by head) — and the output projection ``o``. Without
        them every ``torch.nn.MultiheadAttention`` inside ``model`` is split (fused
        ``in_proj_weight``, or separate ``q_proj_weight``/``k_proj_weight``/
        ``v_proj_weight`` when the key or value size differs, and ``bias_k``/``bias_v``).

    Returns
    -------
    dict[str, llc.ComponentMask]
        ``"<attention module's name>.head<h>"`` ↦ that head's component
        (``"head<h>"`` when ``model`` is itself the attention).

    Raises
    ------
    ValueError, TypeError
        When ``model`` has no ``torch.nn.MultiheadAttention`` and no projections are named,
        a named module is not a ``torch.nn.Linear``, or the sizes do not split into heads.
    """
    names = {id(parameter): name for name, parameter in model.named_parameters()}

    def name_of(parameter: torch.Tensor, what: str) -> str:
        if id(parameter) not in names:
            raise ValueError(f"{what} is not a parameter of `model` (frozen with "
                             "requires_grad=False?)")
        return names[id(parameter)]

    def rows(parameter: torch.Tensor | None, what: str, start: int, stop: int,
             masks: dict[str, np.ndarray]) -> None:
        if parameter is not None:
            masks[name_of(parameter, what)] = block_mask(
                tuple(parameter.shape), 0 if parameter.dim() < 3 else -1, start, stop)

    def fused_rows(parameter: torch.Tensor | None, what: str, start: int, stop: int,
                   width: int, masks: dict[str, np.ndarray]) -> None:
        """A head's rows of a fused query-key-value projection: the same rows in each of
        its three blocks of ``width``."""
        if parameter is not None:
            shape = tuple(parameter.shape)
            masks[name_of(parameter, what)] = np.logical_or.reduce(
                [block_mask(shape, 0, offset + start, offset + stop)
                 for offset in (0, width, 2 * width)])

    heads: dict[str, ComponentMask] = {}
    if any(name is not None for name in (q, k, v, qkv, o)):
        if o is None or (qkv is None and None in (q, k, v)) or (qkv is not None and
                                                              (q, k, v) != (None,) * 3):
            raise ValueError("name the output projection `o` and either `q`, `k` and `v` or "
                             "a fused `qkv`")
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"`num_heads` must be a positive int for hand-written attention; "
                             f"got {num_heads!r}")
        linear = {}
        for role, path in (("q", q), ("k", k), ("v", v), ("qkv", qkv), ("o", o)):
            if path is not None:
                layer = model.get_submodule(path)
                if not isinstance(layer, torch.nn.Linear):
                    raise TypeError(f"`{role}` = {path!r} must name a torch.nn.Linear; got "
                                    f"{type(layer).__name__}")
                linear[role] = layer
        width = linear["o"].in_features
        if width % num_heads:
            raise ValueError(f"the output projection's {width} input features do not split "
                             f"into {num_heads} heads")
        size = width // num_heads
        if qkv is not None and linear["qkv"].out_features != 3 * width:
            raise ValueError(f"the fused `qkv` has {linear['qkv'].out_features} output "
                             f"features; 3 × {width} expected (queries, keys, values)")
        prefix = o.rpartition(".")[0]
        for head in range(num_heads):
            masks: dict[str, np.ndarray] = {}
            start, stop = head * size, (head + 1) * size
            if qkv is not None:
                fused_rows(linear["qkv"].weight, "qkv.weight", start, stop, width, masks)
                fused_rows(linear["qkv"].bias, "qkv.bias", start, stop, width, masks)
            else:
                for role in ("q", "k", "v"):
                    if linear[role].out_features != width:
                        raise ValueError(f"`{role}` has {linear[role].out_features} output "
                                         f"features; the output projection takes {width}")
                    rows(linear[role].weight, f"{role}.weight", start, stop, masks)
                    rows(linear[role].bias, f"{role}.bias", start, stop, masks)
            weight = linear["o"].weight
            masks[name_of(weight, "o.weight")] = block_mask(tuple(weight.shape), 1, start, stop)
            heads[f"{prefix}.head{head}" if prefix else f"head{head}"] = ComponentMask(masks)
        return heads
    for path, attention in model.named_modules():
        if not isinstance(attention, torch.nn.MultiheadAttention):
            continue
        width, count = attention.embed_dim, attention.num_heads
        size = width // count
        for head in range(count):
            masks = {}
            start, stop = head * size, (head + 1) * size
            fused_rows(attention.in_proj_weight, "in_proj_weight", start, stop, width, masks)
            fused_rows(attention.in_proj_bias, "in_proj_bias", start, stop, width, masks)
            if attention.in_proj_weight is None:
                for weight in (attention.q_proj_weight, attention.k_proj_weight,
                               attention.v_proj_weight):
                    rows(weight, "a projection weight", start, stop, masks)
            for extra in (attention.bias_k, attention.bias_v):  # (1, 1, E)
                rows(extra, "bias_k/bias_v", start, stop, masks)
            out = attention.out_proj.weight
            masks[name_of(out, "out_proj.weight")] = block_mask(tuple(out.shape), 1, start, stop)
            heads[f"{path}.head{head}" if path else f"head{head}"] = ComponentMask(masks)
    if not heads:
        raise ValueError("`model` has no torch.nn.MultiheadAttention: for hand-written "
                         "attention name its projections (q=, k=, v= or qkv=, and o=) and "
                         "num_heads=")
    return heads
