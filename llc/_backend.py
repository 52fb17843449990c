"""The adapter protocol between the backend-neutral core and a framework, and its lookup.

The core never imports a deep-learning framework. It finds the adapter for a call from the
type of the parameters, trying only frameworks that are already imported (the einops and
array-api-compat way), so one process can estimate a torch model and a JAX model side by side.

An adapter is one module in ``llc.backends`` (source folder ``backends/``) exposing an
object ``backend`` that implements :class:`Backend`, usually a subclass of
:class:`BackendBase`, which holds the defaults frameworks share.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import numbers
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from . import _rng
from ._tree import tree_flatten

Array = Any  # an array of the backend's framework
PyTree = Any  # nested dict / list / tuple (or a framework pytree) of arrays
Key = Any  # an explicit random key of the backend
LossAndGrad = Callable[[Array, Any], tuple[Array, Array]]

__all__ = ["Backend", "ChainTransforms", "ProcessGroup", "RowBuffer", "available_backends",
           "array_namespace", "backend_for", "get_backend"]


class RowBuffer(Protocol):
    """A ``(num_rows, num_columns)`` table of per-step scalars that fills on the device.

    The sequential runner writes each step's 0-d results (loss, distance, ...) into one per
    chain and block and copies it to the host once, at the block's end: no per-step host
    synchronization, and no hundreds of small long-lived arrays between each step's large
    temporaries, which fragment the C heap (torch on the CPU: the peak resident memory of a
    1-chain MLP run went from 1.4-2.5x to 1.2x the plain SGD loop's).
    """

    def set(self, index: int, values: list[Array]) -> None:
        """Write 0-d arrays ``values`` into columns ``0 .. len(values) - 1`` of row ``index``."""

    def to_numpy(self) -> Any:
        """The table on the host, float64, NaN wherever nothing was written."""


@runtime_checkable
class ChainTransforms(Protocol):
    """Program transformations that let the core run many chains as one program.

    An adapter whose framework has them (JAX, TensorFlow, PyTorch's ``torch.func``) sets
    ``Backend.chain_transforms`` to an object with these; the core (:mod:`llc._vectorized`)
    writes the vectorized runner once against them. Adapters without them set it to ``None``
    and use the sequential runner.
    """

    def vmap(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
        """``fn`` mapped over axis 0 of the arguments whose ``in_axes`` entry is 0."""

    def scan(self, body: Callable[[Any, Any], tuple[Any, Any]], carry: Any, xs: Array
             ) -> tuple[Any, Any]:
        """``lax.scan``: loop ``body(carry, x)`` over the rows of ``xs``, stacking outputs."""

    def cond(self, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
        """``true_fn()`` if the traced boolean ``pred`` else ``false_fn()`` (same structure)."""

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()
            ) -> Callable[..., Any]:
        """``fn`` compiled (retraced only for new shapes). The arguments at
        ``donate_argnums`` are temporaries the caller gives up: a framework may reuse their
        memory for the outputs (JAX does; the others ignore it)."""

    def worthwhile(self, num_chains: int, like: Array) -> bool:
        """Whether ``chain_method="auto"`` should vectorize ``num_chains`` chains of the flat
        parameter vector ``like`` (its size, dtype and device): ``True`` where the vectorized
        program is the faster path, as measured in docs/benchmarks.md."""


class ProcessGroup(Protocol):
    """The processes of a distributed launch, as ``estimate`` uses them: process ``rank`` of
    ``size`` runs the chains ``rank, rank + size, …`` and the runs are exchanged at the end."""

    rank: int
    size: int

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order, on every process."""


def select_devices(devices: Any, available: tuple[Any, ...],
                   named: Callable[[Any], tuple[Any, ...]]) -> tuple[Any, ...]:
    """``estimate``'s ``devices=`` among an adapter's ``available`` devices: ``"all"``, an
    int k (the first k), or what ``named(devices)`` makes of anything else (the adapter's
    parsing of device names or objects, raising its own clear errors); they must be distinct.
    """
    if isinstance(devices, str) and devices == "all":
        return tuple(available)
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        count = int(devices)
        if not 1 <= count <= len(available):
            raise ValueError(f"`devices`: {count} devices asked for, {len(available)} "
                             f"available ({', '.join(map(str, available))})")
        return tuple(available[:count])
    chosen = named(devices)
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"`devices` lists a device twice: {', '.join(map(str, chosen))}")
    return chosen


@runtime_checkable
class Backend(Protocol):
    """What the core needs from a framework: loss and grad, params, rng, data.

    Parameters live in the sampler as one flat vector (``ravel``), so a sampler step is a
    handful of vector operations; ``unravel`` rebuilds the user's pytree (views where the
    framework allows) for ``loss_fn``.
    """

    name: str
    has_autodiff: bool
    chain_transforms: ChainTransforms | None  # None: chains run by the sequential runner
    # compiled programs built from a run's structure, its numbers as arguments, and kept
    # across calls (llc._programs); False: each call builds its own (eager frameworks)
    reuses_programs: bool

    # ---- detection and arrays ---------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        """Whether ``obj`` is an array of this backend's framework."""

    def namespace(self, x: Array) -> Any:
        """An array-API namespace for ``x`` (``sqrt``, ``sum``, ``linalg.vector_norm``...)."""

    def asarray(self, x: Any, *, like: Array) -> Array:
        """``x`` (NumPy or framework array) on ``like``'s device; floating arrays get its dtype."""

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None) -> Array:
        """A framework array from a NumPy array (``dtype`` like ``"float32"``)."""

    def to_numpy(self, x: Array) -> Any:
        """A NumPy copy of ``x`` on the host."""

    def stack(self, xs: list[Array]) -> Array:
        """Stack same-shaped arrays along a new leading axis."""

    def take(self, x: Array, indices: Array) -> Array:
        """Rows ``indices`` of ``x`` (``x[indices]``)."""

    def describe(self, x: Array) -> dict[str, str]:
        """Device and dtype of ``x``, for the result's attributes."""

    def row_buffer(self, num_rows: int, num_columns: int) -> RowBuffer:
        """An empty :class:`RowBuffer` for per-step scalars; it takes its device, and a
        floating dtype at least float32 wide enough for every value, from the first row."""

    def linear_combination(self, *terms: tuple[Any, Array], reuse: int | None = None) -> Array:
        """``c₀·x₀ + c₁·x₁ + …`` for same-shaped arrays ``xᵢ`` and scalar coefficients ``cᵢ``
        (Python numbers or 0-d arrays), as an array with ``x₀``'s dtype.

        The samplers' updates go through it, so an eager framework can do each in one or two
        passes over memory (``torch.add(x, y, alpha=c)`` then in-place adds) instead of one
        temporary per operator; compiled frameworks write the plain expression, which the
        compiler fuses. The result is a new array, except that ``reuse=i`` declares the
        array of term ``i`` a temporary of the caller's that nobody reads again (a step's
        noise, the offset w − w*): a framework with mutable arrays may then write the result
        into it, which saves one parameter-sized allocation per call (torch and NumPy do,
        when its dtype is ``x₀``'s; JAX and TensorFlow ignore it).
        """

    # ---- params -----------------------------------------------------------------------
    def leaves(self, params: PyTree) -> list[Array]:
        """The leaves of ``params`` under the framework's own pytree rules."""

    def data_like(self, params: PyTree) -> Array:
        """A small array on the params' device in their common floating dtype (not widened
        as :meth:`ravel`'s is): the ``like`` that floating data take in :meth:`asarray`."""

    def ravel(self, params: PyTree) -> tuple[Array, Callable[[Array], PyTree]]:
        """A flat copy of the floating leaves of ``params`` and the map back to the pytree.

        The flat vector is the sampling state's dtype: the leaves' common floating type,
        widened to float32 when it is narrower (bfloat16, float16), because a step's
        increment is far below those types' resolution and would round away. ``unravel``
        casts each piece back to its leaf's dtype, so ``loss_fn`` runs in the model's own
        precision.
        """

    # ---- loss and grad ----------------------------------------------------------------
    def value_and_grad(
        self, loss_fn: Callable[[PyTree, Any], Any], unravel: Callable[[Array], PyTree]
    ) -> LossAndGrad:
        """``f(flat, batch) -> (loss, grad_flat)`` for the mean minibatch loss."""

    def value(
        self, loss_fn: Callable[[PyTree, Any], Any], unravel: Callable[[Array], PyTree]
    ) -> Callable[[Array, Any], Array]:
        """``f(flat, batch) -> loss`` without the gradient (full-data loss evaluation)."""

    def compile(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step(..., key, state, batch, diagnose)`` compiled where the framework can
        (``jax.jit``; the identity for eager frameworks); ``diagnose`` is static, given by
        position or by name. A sampler step is ``step(key, state, batch, diagnose)``; a
        program of ``llc._programs`` takes the run's numbers first."""

    def process_group(self) -> ProcessGroup | None:
        """The processes this one runs with (a distributed launch the framework has set up:
        ``torchrun`` and ``torch.distributed``), or None for a single process."""

    def chain_devices(self, devices: Any) -> tuple[Any, ...] | None:
        """``estimate``'s ``devices=`` resolved to the devices the chains are split over
        (:meth:`over_devices`), or None for the params' device alone; a clear
        ``ValueError`` for a value the framework cannot use."""

    def over_devices(self, fn: Callable[..., Any], devices: tuple[Any, ...],
                     in_axes: tuple[int | None, ...], out_axes: tuple[int, ...]
                     ) -> Callable[..., Any]:
        """``fn`` compiled to run on each of ``devices`` over its share of the chains: the
        arguments whose ``in_axes`` entry is an axis are split along it into equal
        consecutive parts, one per device, the others copied to every device; the outputs
        are joined along ``out_axes``. Each device runs ``fn`` on its part exactly as one
        device would run it on those chains alone (JAX: ``shard_map``). The returned callable
        has ``replicate(tree)``: ``tree`` copied to every device once, for arguments passed
        to many calls. Only adapters whose :meth:`chain_devices` accepts devices need it."""

    # ---- rng --------------------------------------------------------------------------
    def key(self, seed: int) -> Key:
        """A random key for an integer seed."""

    def split(self, key: Key, num: int) -> list[Key]:
        """``num`` independent keys derived from ``key``."""

    def fold_in(self, key: Key, data: int) -> Key:
        """A key derived from ``key`` and an integer (a step or epoch index)."""

    def normal(self, key: Key, like: Array) -> Array:
        """Standard normal noise with the shape, dtype and device of ``like``."""

    def permutation(self, key: Key, n: int, like: Array) -> Array:
        """A random permutation of ``range(n)`` on ``like``'s device."""

    def integers(self, key: Key, n: int, size: int, like: Array) -> Array:
        """``size`` independent uniform integers in ``[0, n)`` (rows drawn with replacement),
        on ``like``'s device."""

    def isolated_global_rng(self, seed: int) -> AbstractContextManager[None]:
        """Run a block with the framework's global RNG seeded from ``seed``, then restore it.

        Framework code that draws from the global generator (a shuffling ``DataLoader``)
        becomes reproducible, and the user's global RNG state is left untouched.
        """


class StackedRows:
    """A :class:`RowBuffer` for frameworks whose arrays are immutable (JAX, TensorFlow): it
    keeps each row's 0-d arrays and stacks each column once, in :meth:`to_numpy` (one
    device-to-host copy per column)."""

    def __init__(self, stack: Callable[[list[Any]], Any], to_numpy: Callable[[Any], Any],
                 num_rows: int, num_columns: int) -> None:
        self._stack, self._to_numpy = stack, to_numpy
        self._shape = (num_rows, num_columns)
        self._rows: dict[int, list[Any]] = {}

    def set(self, index: int, values: list[Any]) -> None:
        self._rows[index] = list(values)

    def to_numpy(self) -> np.ndarray:
        table = np.full(self._shape, np.nan)
        for column in range(self._shape[1]):
            rows = [index for index, values in self._rows.items() if len(values) > column]
            if rows:
                stacked = self._stack([self._rows[index][column] for index in rows])
                table[rows, column] = np.asarray(self._to_numpy(stacked), dtype=np.float64)
        return table


class BackendBase(abc.ABC):
    """Defaults for an adapter (subclass it and implement the rest of :class:`Backend`).

    What frameworks share: an eager framework compiles nothing and reuses no programs; keys
    are llc's own host integers (SplitMix64, ``llc._rng``: a pure function of seed, chain and
    step), so ``key``/``split``/``fold_in`` need no framework; no global generator to
    isolate; params are pytrees of dicts, lists and tuples; the per-step table stacks 0-d
    arrays (:class:`StackedRows`). An adapter overrides what its framework does differently
    (JAX's typed keys, torch's forked global generator, ``vmap``-able transforms).
    """

    has_autodiff: bool = True
    chain_transforms: ChainTransforms | None = None
    reuses_programs: bool = False

    @abc.abstractmethod
    def stack(self, xs: list[Array]) -> Array:
        """Stack 0-d or equal-shape arrays along a new axis 0."""

    @abc.abstractmethod
    def to_numpy(self, x: Array) -> Any:
        """``x`` as a NumPy array on the host."""

    def leaves(self, params: PyTree) -> list[Array]:
        return tree_flatten(params)[0]

    def data_like(self, params: PyTree) -> Array:
        return cast(Backend, self).ravel(params)[0]  # the flat vector: right unless narrow

    def row_buffer(self, num_rows: int, num_columns: int) -> RowBuffer:
        return StackedRows(self.stack, self.to_numpy, num_rows, num_columns)

    def compile(self, step: Callable[..., Any]) -> Callable[..., Any]:
        return step  # eager: nothing to compile

    def process_group(self) -> ProcessGroup | None:
        return None  # one process, unless the adapter finds a distributed launch

    def chain_devices(self, devices: Any) -> tuple[Any, ...] | None:
        """``estimate``'s ``devices=`` as the tuple of devices the chains are split over
        (None: the params' device alone, as without it). An adapter that splits chains
        over devices overrides this; here any other value is an error."""
        if devices is None:
            return None
        name = getattr(self, "name", "this")
        raise ValueError(f"`devices`: the {name} backend runs every chain on the "
                         f"params' device; got devices={devices!r} (devices= splits the chains "
                         "over JAX devices; docs/scale.md)")

    def over_devices(self, fn: Callable[..., Any], devices: tuple[Any, ...],
                     in_axes: tuple[int | None, ...], out_axes: tuple[int, ...]
                     ) -> Callable[..., Any]:
        raise NotImplementedError(  # unreachable: chain_devices accepts no devices here
            "this backend does not split chains over devices")

    def key(self, seed: int) -> Key:
        return _rng.make_key(seed)

    def split(self, key: Key, num: int) -> list[Key]:
        return _rng.split(key, num)

    def fold_in(self, key: Key, data: int) -> Key:
        return _rng.fold_in(key, data)

    def isolated_global_rng(self, seed: int) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


# (backend name, framework module that must already be imported, adapter module)
_ADAPTERS: tuple[tuple[str, str, str], ...] = (
    ("torch", "torch", "llc.backends.torch"),
    ("jax", "jax", "llc.backends.jax"),
    ("tensorflow", "tensorflow", "llc.backends.tensorflow"),
    ("numpy", "numpy", "llc.backends.numpy"),
)


def get_backend(name: str) -> Backend:
    """The adapter called ``name`` (``"numpy"``, ``"torch"``, ...), importing its framework.

    Raises
    ------
    ValueError
        If no adapter has that name.
    ImportError
        If the framework is not installed.
    """
    for backend_name, _, module_name in _ADAPTERS:
        if backend_name == name:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name == module_name:
                    raise ValueError(
                        f"backend {name!r} has no adapter in this llc version") from None
                raise ImportError(
                    f"backend {name!r} needs {error.name!r}, which is not installed; "
                    f"install it with `pip install 'local-learning-coefficient[{name}]'`"
                ) from error
            return module.backend
    known = ", ".join(repr(entry[0]) for entry in _ADAPTERS)
    raise ValueError(f"unknown backend {name!r}; expected one of {known}")


def _loaded_backends() -> Iterator[Backend]:
    for _, framework, module_name in _ADAPTERS:
        if framework in sys.modules:
            try:
                yield importlib.import_module(module_name).backend
            except ModuleNotFoundError:  # adapter not written yet for this framework
                continue


def available_backends() -> list[str]:
    """Names of the backends whose frameworks are installed (imports nothing heavy)."""
    from importlib.util import find_spec

    names = []
    for name, framework, module_name in _ADAPTERS:
        if find_spec(framework) is not None and find_spec(module_name) is not None:
            names.append(name)
    return names


def backend_for(tree: Any, *, argument: str = "params") -> Backend:
    """The adapter whose framework owns every array in the pytree ``tree``.

    Each loaded framework flattens ``tree`` by its own pytree rules (JAX knows flax and
    equinox containers), so the first framework whose leaves are its arrays wins.

    Raises
    ------
    ValueError
        If ``tree`` has no leaves.
    TypeError
        If it holds a non-array or mixes frameworks; the message names ``argument``.
    """
    from ._tree import tree_flatten

    leaves = tree_flatten(tree)[0]
    for backend in _loaded_backends():
        own = backend.leaves(tree)
        if own and backend.is_array(own[0]):
            leaves = own
            break
    if not leaves:
        raise ValueError(f"`{argument}` is empty: expected at least one floating-point array")
    for backend in _loaded_backends():
        if backend.is_array(leaves[0]):
            for index, leaf in enumerate(leaves):
                if not backend.is_array(leaf):
                    raise TypeError(
                        f"`{argument}` mixes frameworks: leaf 0 is a {backend.name} array but "
                        f"leaf {index} is {type(leaf).__module__}.{type(leaf).__qualname__}"
                    )
            return backend
    leaf = leaves[0]
    raise TypeError(
        f"`{argument}` must be a pytree (dict, list or tuple) of NumPy, PyTorch, JAX or "
        f"TensorFlow arrays; got a leaf of type {type(leaf).__module__}.{type(leaf).__qualname__}"
    )


def array_namespace(x: Any) -> Any:
    """Array-API namespace of ``x`` for backend-neutral model code (problems, user losses)."""
    for backend in _loaded_backends():
        if backend.is_array(x):
            return backend.namespace(x)
    raise TypeError(f"`x` must be a NumPy, PyTorch, JAX or TensorFlow array; got "
                    f"{type(x).__module__}.{type(x).__qualname__}")
