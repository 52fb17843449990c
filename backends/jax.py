"""JAX adapter: params are any pytree of ``jax.Array`` (dicts, flax ``params``, equinox arrays).

Gradients come from ``jax.value_and_grad`` on the flat parameter vector
(``jax.flatten_util.ravel_pytree``), compiled with ``jax.jit``, and the sampler's whole step is
compiled too (:meth:`JaxBackend.compile`). Keys are ``jax.random`` keys. float64 needs
``jax.config.update("jax_enable_x64", True)`` in your program: llc never changes JAX's
configuration.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _rng
from llc._backend import BackendBase, select_devices
from llc._restrict import ComponentMask
from llc._engine.programs import program_cache

from ._common import (check_reduction, heads_along_an_axis, next_token, scaled_sum,
                      split_last, unpack_checked)

__all__ = ["attention_heads", "backend", "causal_lm_loss", "from_equinox", "from_flax",
           "next_token"]


class JaxTransforms:
    """``jax.vmap``, ``lax.scan``, ``lax.cond`` and ``jax.jit`` for the vectorized runner."""

    def vmap(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
        return jax.vmap(fn, in_axes=in_axes)

    def scan(self, body: Callable[..., Any], carry: Any, xs: Any) -> tuple[Any, Any]:
        return jax.lax.scan(body, carry, xs)

    def cond(self, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
        return jax.lax.cond(pred, true_fn, false_fn)

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()
            ) -> Callable[..., Any]:
        return jax.jit(fn, donate_argnums=donate_argnums)

    def worthwhile(self, num_chains: int, like: Any) -> bool:
        return True  # one compiled program per block beats a dispatch per chain and step


class JaxProcessGroup:
    """The processes of ``jax.distributed`` (``jax.process_index()`` of
    ``jax.process_count()``), for :meth:`JaxBackend.process_group`; objects are exchanged as
    pickled bytes with ``multihost_utils.process_allgather`` (on CPUs this needs JAX's CPU
    collectives: ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before
    ``jax.distributed.initialize``)."""

    def __init__(self) -> None:
        self.rank = jax.process_index()
        self.size = jax.process_count()

    def all_gather(self, obj: Any) -> list[Any]:
        from jax.experimental import multihost_utils

        payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = np.asarray(multihost_utils.process_allgather(
            np.array([payload.size], dtype=np.int32))).reshape(self.size)
        padded = np.zeros(int(lengths.max()), dtype=np.uint8)
        padded[:payload.size] = payload
        gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(self.size, -1)
        return [pickle.loads(gathered[rank, :int(lengths[rank])].tobytes())
                for rank in range(self.size)]


class JaxBackend(BackendBase):
    """Adapter for ``jax.Array`` parameters on any JAX device."""

    name = "jax"
    reuses_programs = True  # llc._programs: compiled steps and blocks outlive a call
    has_autodiff = True
    chain_transforms = JaxTransforms()

    # ---- arrays -------------------------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, jax.Array)

    def leaves(self, params: Any) -> list[Any]:
        return jax.tree_util.tree_leaves(params)

    def namespace(self, x: Any) -> Any:
        return jnp

    def _device(self, like: jax.Array) -> Any:
        try:
            return next(iter(like.devices()))
        except (AttributeError, jax.errors.ConcretizationTypeError):  # a tracer
            return None

    def asarray(self, x: Any, *, like: jax.Array) -> jax.Array:
        array = x if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x))
        if jnp.issubdtype(array.dtype, jnp.floating):
            array = array.astype(like.dtype)
        device = self._device(like)
        return array if device is None else jax.device_put(array, device)

    def over_devices(self, fn: Callable[..., Any], devices: tuple[Any, ...],
                     in_axes: tuple[int | None, ...], out_axes: tuple[int, ...]
                     ) -> Callable[..., Any]:
        """``shard_map`` over a one-axis mesh of ``devices`` (named ``"chain"``), compiled:
        each device runs ``fn`` on its consecutive share of the chains; the arguments are
        put where the mesh wants them first (no copy where they already are)."""
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices, dtype=object), ("chain",))

        def spec(axis: int | None) -> PartitionSpec:
            return PartitionSpec() if axis is None else PartitionSpec(*[None] * axis, "chain")

        mapped = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=tuple(map(spec, in_axes)),
                                       out_specs=tuple(map(spec, out_axes)), check_vma=False))
        shardings = [NamedSharding(mesh, spec(axis)) for axis in in_axes]

        def call(*args: Any) -> Any:
            return mapped(*(jax.device_put(arg, sharding)
                            for arg, sharding in zip(args, shardings)))

        call.replicate = lambda tree: jax.device_put(  # type: ignore[attr-defined]
            tree, NamedSharding(mesh, PartitionSpec()))
        return call

    def process_group(self) -> JaxProcessGroup | None:
        """The processes of ``jax.distributed`` when there are more than one, else None."""
        return JaxProcessGroup() if jax.process_count() > 1 else None

    def chain_devices(self, devices: Any) -> tuple[Any, ...] | None:
        """``None``; ``"all"`` (this process's devices of the default backend,
        ``jax.local_devices()``); an int k (the first k of those); or a sequence of this
        process's ``jax.Device``."""
        if devices is None:
            return None

        def named(devices: Any) -> tuple[Any, ...]:
            if isinstance(devices, str):
                raise ValueError(f"`devices` must be None, 'all', a count or a list of "
                                 f"jax.Device; got {devices!r}")
            try:
                chosen = tuple(devices)
            except TypeError:
                chosen = ()
            if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
                raise TypeError(f"`devices` must be None, 'all', a count or a non-empty list "
                                f"of jax.Device; got {devices!r}")
            if any(d.process_index != jax.process_index() for d in chosen):
                raise ValueError(f"`devices` must be this process's devices "
                                 f"(jax.local_devices()); got {chosen}")
            return chosen

        return select_devices(devices, tuple(jax.local_devices()), named)

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None
                   ) -> jax.Array:
        array = jnp.asarray(np.asarray(x), dtype=dtype)
        if device is None:
            return array
        platform, _, index = str(device).partition(":")
        platform = {"cuda": "gpu"}.get(platform, platform)
        return jax.device_put(array, jax.devices(platform)[int(index or 0)])

    def to_numpy(self, x: jax.Array) -> np.ndarray:
        if x.dtype == jnp.bfloat16:  # not a NumPy dtype: float32 holds it exactly
            x = x.astype(jnp.float32)
        return np.array(jax.device_get(x), copy=True)

    def stack(self, xs: list[jax.Array]) -> jax.Array:
        return jnp.stack(xs)

    def take(self, x: jax.Array, indices: jax.Array) -> jax.Array:
        return jnp.take(x, indices, axis=0)

    def linear_combination(self, *terms: tuple[Any, jax.Array], reuse: int | None = None
                           ) -> jax.Array:
        return scaled_sum(terms)  # XLA fuses the expression

    def describe(self, x: jax.Array) -> dict[str, str]:
        device = self._device(x)
        if device is None or device.platform == "cpu":
            name = "cpu"
        else:
            name = f"{'cuda' if device.platform == 'gpu' else device.platform}:{device.id}"
        return {"device": name, "dtype": str(x.dtype)}

    # ---- params -------------------------------------------------------------------------
    def data_like(self, params: Any) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(params)
        like = jnp.zeros((), jnp.result_type(*leaves))
        device = self._device(leaves[0])
        return like if device is None else jax.device_put(like, device)

    def ravel(self, params: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
        with_paths = jax.tree_util.tree_leaves_with_path(params)
        if not with_paths:
            raise ValueError("`params` is empty: expected at least one floating-point array")
        for path, leaf in with_paths:
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(
                    f"`params` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype "
                    f"{leaf.dtype}; expected a floating-point array (sample only the model's "
                    "real-valued parameters)"
                )
        if sum(leaf.size for _, leaf in with_paths) == 0:
            raise ValueError("`params` has no elements: expected at least one parameter")
        flat, unravel = ravel_pytree(params)
        if flat.dtype.itemsize < 4:  # the sampling state: at least float32 (llc._backend.ravel)
            narrow, unravel_narrow = flat.dtype, unravel
            flat = flat.astype(jnp.float32)

            def unravel(vector: jax.Array) -> Any:
                return unravel_narrow(vector.astype(narrow))

        return flat, _Unravel(unravel, params)

    # ---- loss and grad ------------------------------------------------------------------
    def value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        return program_cache(self).get(("value_and_grad", loss_fn, unravel),
                                       lambda: self._value_and_grad(loss_fn, unravel))

    def _value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def scalar_loss(flat: jax.Array, batch: Any) -> jax.Array:
            loss = loss_fn(unravel(flat), batch)
            if not isinstance(loss, jax.Array) or jnp.size(loss) != 1:
                raise ValueError(
                    "`loss_fn` must return a scalar loss (the mean over the batch) as a JAX "
                    f"array; got {type(loss).__name__} of shape {jnp.shape(loss)}"
                )
            if not jnp.issubdtype(loss.dtype, jnp.floating):
                raise TypeError(f"`loss_fn` must return a floating-point loss; got {loss.dtype}")
            return _widened(jnp.reshape(loss, ()), flat)

        return jax.jit(jax.value_and_grad(scalar_loss))

    def value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        return program_cache(self).get(("value", loss_fn, unravel), lambda: jax.jit(
            lambda flat, batch: _widened(jnp.reshape(loss_fn(unravel(flat), batch), ()), flat)))

    def compile(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step(*args, diagnose)`` compiled with ``jax.jit``, ``diagnose`` static (given by
        position or by name)."""
        return jax.jit(step, static_argnames=("diagnose",))

    # ---- rng ----------------------------------------------------------------------------
    def key(self, seed: int) -> jax.Array:
        mixed = _rng.make_key(seed)
        words = jnp.asarray(np.array([mixed >> 32, mixed & 0xFFFFFFFF], dtype=np.uint32))
        return jax.random.wrap_key_data(words, impl="threefry2x32")

    def split(self, key: jax.Array, num: int) -> list[jax.Array]:
        return list(jax.random.split(key, num))

    def fold_in(self, key: jax.Array, data: int) -> jax.Array:
        return jax.random.fold_in(key, data)

    def normal(self, key: jax.Array, like: jax.Array) -> jax.Array:
        return jax.random.normal(key, like.shape, like.dtype)

    def permutation(self, key: jax.Array, n: int, like: jax.Array) -> jax.Array:
        order = _shuffle(key, n)
        device = self._device(like)
        return order if device is None else jax.device_put(order, device)

    def integers(self, key: jax.Array, n: int, size: int, like: jax.Array) -> jax.Array:
        dtype = jnp.int32 if n < 2**31 else jnp.int64  # the same draws with or without x64
        rows = jax.random.randint(key, (size,), 0, n, dtype=dtype)
        device = self._device(like)
        return rows if device is None else jax.device_put(rows, device)

    @contextlib.contextmanager
    def isolated_global_rng(self, seed: int) -> Iterator[None]:
        yield  # JAX has no global random state


def _widened(loss: jax.Array, flat: jax.Array) -> jax.Array:
    """The loss in the sampling state's dtype when narrower (a bfloat16 model's loss is
    accumulated and differenced in float32)."""
    return loss.astype(flat.dtype) if loss.dtype.itemsize < flat.dtype.itemsize else loss


class _Unravel:
    """``ravel_pytree``'s unravel, equal to every other of the same tree structure, leaf
    shapes and dtypes (it then does the same), so that programs keyed by it are reused."""

    def __init__(self, unravel: Callable[[jax.Array], Any], params: Any) -> None:
        self._unravel = unravel
        leaves, treedef = jax.tree_util.tree_flatten(params)
        self._key = (treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves))

    def __call__(self, flat: jax.Array) -> Any:
        return self._unravel(flat)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unravel) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


def _shuffle(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``range(n)`` (int32), by sorting packed random words.

    Each element's sort word is ``random bits << index bits | index`` in 32 bits: one
    single-operand sort per round, several times faster on CPU than ``jax.random.permutation``
    (a key-value sort). Ties between equal random parts are broken by the previous order, so
    two rounds are taken (as ``jax.random.permutation`` does). The words are 32-bit whether or
    not ``jax_enable_x64`` is set, so the data order does not depend on it. Above 2**24 rows
    the random part would be too short: ``jax.random.permutation`` is used.
    """
    index_bits = max(1, (n - 1).bit_length())
    random_bits = 32 - index_bits
    if random_bits < 8:
        return jax.random.permutation(key, n)
    index = jnp.arange(n, dtype=jnp.uint32)
    order = jnp.arange(n, dtype=jnp.int32)
    for round_key in jax.random.split(key, 2):
        random_part = jax.random.bits(round_key, (n,), jnp.uint32) >> index_bits
        packed = jnp.sort((random_part << index_bits) | index)
        order = jnp.take(order, (packed & ((1 << index_bits) - 1)).astype(jnp.int32))
    return order


backend = JaxBackend()


def from_flax(
    apply_fn: Callable[..., Any],
    variables: Any,
    criterion: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    params_key: str = "params",
    unpack: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]] | None = None,
) -> tuple[Callable[[Any, Any], jax.Array], Any]:
    """``(loss_fn, params)`` for a Flax (linen) model: its ``apply`` and its variables.

    ``loss_fn(params, batch)`` runs ``criterion(apply_fn({**variables, params_key: params},
    *batch[:-1]), batch[-1])``: only ``variables[params_key]`` is sampled; other collections
    (batch-norm statistics) stay fixed at their values. Nothing of the model is written.

    Parameters
    ----------
    apply_fn
        ``model.apply`` of a ``flax.linen.Module`` (in the mode it should be evaluated in,
        e.g. ``functools.partial(model.apply, train=False)``).
    variables
        The trained variables, ``{"params": ..., ...}`` as ``model.init`` returns them.
    criterion
        ``criterion(outputs, targets)`` returning the mean per-sample negative
        log-likelihood, e.g. ``lambda z, y: optax.softmax_cross_entropy_with_integer_labels(
        z, y).mean()``.
    params_key
        The collection to sample.
    unpack
        ``unpack(batch) -> (args, kwargs, targets)``, as in
        :func:`llc.backends.torch.from_module`: dict batches, next-token targets
        (:func:`next_token` with :func:`causal_lm_loss`). Default ``(batch[:-1], {},
        batch[-1])``.

    Examples
    --------
    >>> import flax.linen as nn
    >>> import jax
    >>> import jax.numpy as jnp
    >>> model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    >>> def criterion(outputs, targets):
    ...     return jnp.mean((outputs - targets) ** 2)
    >>> loss_fn, params = llc.backends.jax.from_flax(model.apply, variables, criterion)
    >>> x, y = jax.random.normal(jax.random.key(1), (1000, 4)), jnp.zeros((1000, 3))
    >>> result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4, num_draws=100)
    """
    if not callable(apply_fn):
        raise TypeError("`apply_fn` must be callable as apply_fn(variables, *inputs), e.g. "
                        "model.apply")
    if not callable(criterion):
        raise TypeError("`criterion` must be callable as criterion(outputs, targets)")
    if not hasattr(variables, "keys") or params_key not in variables:
        raise ValueError(f"`variables` must be a mapping with a {params_key!r} collection, as "
                         "model.init returns it")
    fixed = {name: value for name, value in variables.items() if name != params_key}
    split = _unpacker(unpack)

    def loss_fn(params: Any, batch: Any) -> jax.Array:
        args, kwargs, targets = split(batch)
        return criterion(apply_fn({**fixed, params_key: params}, *args, **kwargs), targets)

    return loss_fn, variables[params_key]


def from_equinox(
    module: Any,
    criterion: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    batched: bool = False,
    unpack: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]] | None = None,
) -> tuple[Callable[[Any, Any], jax.Array], Any]:
    """``(loss_fn, params)`` for an Equinox module.

    ``params`` is the module's floating-point arrays (``eqx.partition(module,
    eqx.is_inexact_array)``), a pytree shaped like the module with ``None`` elsewhere;
    ``loss_fn(params, batch)`` recombines them with the rest of the module and runs
    ``criterion(outputs, batch[-1])`` on the outputs for the inputs ``batch[:-1]``.

    Parameters
    ----------
    module
        The trained ``equinox.Module``.
    criterion
        ``criterion(outputs, targets)`` returning the mean per-sample negative
        log-likelihood.
    batched
        Whether ``module`` takes a batch. Equinox layers act on one example, so by default
        the module is mapped over the batch with ``jax.vmap``.
    unpack
        ``unpack(batch) -> (args, kwargs, targets)`` (see :func:`from_flax`); the keyword
        inputs are mapped over the batch like the positional ones.

    Examples
    --------
    >>> import equinox as eqx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> model = eqx.nn.MLP(4, 3, width_size=8, depth=1, key=jax.random.key(0))
    >>> def criterion(outputs, targets):
    ...     return jnp.mean((outputs - targets) ** 2)
    >>> loss_fn, params = llc.backends.jax.from_equinox(model, criterion)
    >>> x, y = jax.random.normal(jax.random.key(1), (1000, 4)), jnp.zeros((1000, 3))
    >>> result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4, num_draws=100)
    """
    import equinox as eqx

    if not isinstance(module, eqx.Module):
        raise TypeError(f"`module` must be an equinox.Module; got {type(module).__name__}")
    if not callable(criterion):
        raise TypeError("`criterion` must be callable as criterion(outputs, targets)")
    params, static = eqx.partition(module, eqx.is_inexact_array)
    split = _unpacker(unpack)

    def loss_fn(sampled: Any, batch: Any) -> jax.Array:
        args, kwargs, targets = split(batch)
        model = eqx.combine(sampled, static)
        outputs = model(*args, **kwargs) if batched else jax.vmap(model)(*args, **kwargs)
        return criterion(outputs, targets)

    return loss_fn, params


def _unpacker(unpack: Any) -> Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]]:
    if unpack is None:
        return split_last
    if not callable(unpack):
        raise TypeError("`unpack` must be callable as unpack(batch) -> (args, kwargs, targets); "
                        f"got {type(unpack).__name__}")
    return unpack_checked(unpack)


def causal_lm_loss(outputs: Any, targets: Any, *, reduction: str = "mean") -> Any:
    """The mean next-token cross-entropy (JAX): over every target token, or over the tokens
    whose mask is 1 when ``targets`` is ``(tokens, mask)`` (:func:`next_token`'s targets
    for padded batches). ``outputs`` are logits (batch, length, vocabulary), an object with
    a ``logits`` attribute or a tuple whose first element they are. ``reduction="none"``
    returns ``(losses, mask)``, both (batch, length), for per-token observables."""
    logits = getattr(outputs, "logits", None)
    if logits is None:
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    tokens, weights = targets if isinstance(targets, (tuple, list)) else (targets, None)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    losses = -jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    check_reduction(reduction)
    if reduction == "none":
        return losses, (jnp.ones_like(losses) if weights is None
                        else weights.astype(losses.dtype))
    if weights is None:
        return jnp.mean(losses)
    weights = weights.astype(losses.dtype)
    return jnp.sum(losses * weights) / jnp.sum(weights)


def attention_heads(params: Any) -> dict[str, ComponentMask]:
    """Per-head components of every Flax ``MultiHeadDotProductAttention`` (or Equinox
    ``MultiheadAttention``) in ``params``, for ``llc.estimate(..., restrict=...)``.

    ``params`` is the collection ``from_flax`` samples (``variables["params"]``): an attention
    is a sub-dict with ``query``, ``key``, ``value`` and ``out``, whose kernels keep the heads
    on an axis of their own ((E, H, d) and (H, d, E)). A head is its slice of the query, key
    and value kernels and biases and of the output kernel; the output bias is shared and
    belongs to no head. Join heads with ``|``.

    For Equinox, ``params`` is :func:`from_equinox`'s module of arrays; a head is its rows of
    the query, key and value projections (weights and biases) and its columns of the output
    projection's weight, and the heads are named ``"attention<i>.head<h>"`` (the i-th
    attention in the module's leaf order).

    Returns
    -------
    dict[str, llc.ComponentMask]
        ``"<dotted path of the attention>.head<h>"`` ↦ that head's component.

    Raises
    ------
    ValueError
        If ``params`` holds no such attention, or its shapes do not agree on the heads.
    """
    heads: dict[str, ComponentMask] = {}

    def visit(node: Any, path: str) -> None:
        if not hasattr(node, "items"):
            return
        roles = ("query", "key", "value", "out")
        found = [node[role].get("kernel") if hasattr(node.get(role), "get") else None
                 for role in roles]
        kernels = [kernel for kernel in found if kernel is not None and len(kernel.shape) == 3]
        if len(kernels) == len(roles):
            parts = []
            for role, kernel in zip(roles, kernels):
                axis = 0 if role == "out" else 1
                parts.append((f"{path}{role}.kernel", tuple(kernel.shape), axis))
                bias = node[role].get("bias")
                if bias is not None and role != "out":
                    parts.append((f"{path}{role}.bias", tuple(bias.shape), 0))
            heads.update(heads_along_an_axis(parts, int(kernels[0].shape[1]), path))
            return
        for key, value in node.items():
            visit(value, f"{path}{key}.")

    if not hasattr(params, "items") and _equinox_attention(params):
        return _equinox_heads(params)
    visit(params, "")
    if not heads:
        raise ValueError("`params` holds no Flax MultiHeadDotProductAttention (a dict with "
                         "'query', 'key', 'value' and 'out' kernels of 3 axes) and no "
                         "equinox.nn.MultiheadAttention")
    return heads


def _equinox_attention(params: Any) -> list[Any]:
    """The ``equinox.nn.MultiheadAttention`` modules inside ``params``, if Equinox is loaded."""
    eqx = sys.modules.get("equinox")
    if eqx is None:
        return []

    def is_attention(node: Any) -> bool:
        return isinstance(node, eqx.nn.MultiheadAttention)

    return [node for node in jax.tree_util.tree_leaves(params, is_leaf=is_attention)
            if is_attention(node)]


def _equinox_heads(params: Any) -> dict[str, ComponentMask]:
    """Per-head components of the Equinox attentions in ``params`` (``from_equinox``'s
    module of arrays): its query, key and value projections' rows (weights (H·d, E), biases
    (H·d,)) and its output projection's columns. Equinox modules have no parameter names:
    the masks are keyed as ``restrict=`` names the leaves of such a pytree, by their position
    among ``jax.tree_util.tree_leaves(params)``, and the heads as ``attention<i>.head<h>``."""
    from llc._restrict import block_mask

    position = {id(leaf): str(index)
                for index, leaf in enumerate(jax.tree_util.tree_leaves(params))}
    heads: dict[str, ComponentMask] = {}
    for number, attention in enumerate(_equinox_attention(params)):
        count = int(attention.num_heads)
        size = int(attention.query_proj.weight.shape[0]) // count
        for head in range(count):
            start, stop = head * size, (head + 1) * size
            masks = {}
            for projection in (attention.query_proj, attention.key_proj, attention.value_proj):
                for array in (projection.weight, projection.bias):
                    if array is not None:
                        masks[position[id(array)]] = block_mask(tuple(array.shape), 0, start,
                                                                stop)
            weight = attention.output_proj.weight
            masks[position[id(weight)]] = block_mask(tuple(weight.shape), 1, start, stop)
            heads[f"attention{number}.head{head}"] = ComponentMask(masks)
    return heads
