"""Data sources: a tuple of arrays that llc batches itself, or the user's re-iterable batches."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from ._backend import Array, Backend, Key, _loaded_backends
from ._tree import tree_flatten, tree_map
from ._validate import positive_int

__all__ = ["ArrayData", "DataSource", "IterableData", "make_data"]


class DataSource(Protocol):
    """Where a run's minibatches come from: :class:`ArrayData` (arrays llc batches itself)
    or :class:`IterableData` (the user's batches). The runner, the step-size tuner and the
    loss at w* read data only through this."""

    @property
    def num_data(self) -> int:
        """n, the number of samples (the scale of nβ = n/log n)."""

    @property
    def batch_size(self) -> int | None:
        """Rows per minibatch; ``None`` where the user's batches set it."""

    def stream(self, key: Key, start: int = 0) -> Generator[Any, None, None]:
        """Endless minibatches of one chain from its ``start``-th on, a pure function of
        ``key`` and the position in the stream (array data) or one pass of the user's
        iterable after another; ``close()`` ends the pass (a ``DataLoader``'s workers)."""

    def evaluation_batches(self, max_batches: int | None) -> Iterator[tuple[Any, int]]:
        """One pass over the data in order (or its first ``max_batches`` batches), each batch
        with its number of rows: the loss and gradient at w*."""


class ArrayData:
    """A tuple of arrays sharing the leading dimension n, batched by llc.

    Two ways to draw a chain's minibatches, each a pure function of the chain's key and the
    step (or epoch), so any step can be recomputed from the seed:

    - ``with_replacement=True`` (the default of :func:`llc.estimate`): the b rows of step t
      are b independent uniform draws from the n rows, ``integers(fold_in(key, t), n, b)``.
      The batch of step t is then independent of the chain's position w_t (which depends
      only on earlier batches), so its loss is an unbiased estimate of L_n(w_t). With b = n
      every step takes all the rows, in order (full batch: exact gradients).
    - ``with_replacement=False``: a random permutation of the rows per epoch, cut into
      ⌊n / b⌋ batches (a shuffling ``DataLoader`` with ``drop_last=True``); the
      permutation of epoch e is ``permutation(fold_in(key, e), n)``. A batch then holds none
      of the rows the chain fitted earlier in the epoch, so its loss at w_t overestimates
      L_n(w_t) (the own-batch bias, docs/estimator.md).
    """

    def __init__(self, arrays: tuple[Array, ...], batch_size: int, backend: Backend,
                 with_replacement: bool = True):
        self.arrays = arrays
        self.num_data = int(arrays[0].shape[0])
        self.batch_size = batch_size
        self.backend = backend
        self.with_replacement = with_replacement

    @property
    def full_batch(self) -> bool:
        """Whether every with-replacement step takes all the rows, in order."""
        return self.with_replacement and self.batch_size == self.num_data

    @property
    def batches_per_epoch(self) -> int:
        """Batches per permutation (``with_replacement=False``)."""
        return self.num_data // self.batch_size

    def rows(self, key: Key, step: int) -> Array:
        """The row indices of step ``step`` drawn with replacement (traceable in ``step``)."""
        return self.backend.integers(self.backend.fold_in(key, step), self.num_data,
                                     self.batch_size, self.arrays[0])

    def stream(self, key: Key, start: int = 0) -> Generator[tuple[Array, ...], None, None]:
        """Endless minibatches for one chain, from its ``start``-th batch on."""
        backend = self.backend
        if self.full_batch:
            while True:
                yield self.arrays
        if self.with_replacement:
            step = start
            while True:
                rows = self.rows(key, step)
                yield tuple(backend.take(array, rows) for array in self.arrays)
                step += 1
        batches_per_epoch = self.batches_per_epoch
        epoch, first = divmod(start, batches_per_epoch)
        while True:
            order = backend.permutation(backend.fold_in(key, epoch), self.num_data, self.arrays[0])
            for index in range(first, batches_per_epoch):
                rows = order[index * self.batch_size:(index + 1) * self.batch_size]
                yield tuple(backend.take(array, rows) for array in self.arrays)
            epoch, first = epoch + 1, 0

    def evaluation_batches(self, max_batches: int | None
                           ) -> Iterator[tuple[tuple[Array, ...], int]]:
        """Consecutive batches of ``batch_size`` rows in order (the last one shorter when
        ``batch_size`` does not divide n), with their sizes, for the loss at w*. The sampler's
        batch shape: a compiling framework reuses the program it already built for it."""
        size = self.batch_size
        for count, start in enumerate(range(0, self.num_data, size)):
            if max_batches is not None and count >= max_batches:
                return
            stop = min(start + size, self.num_data)
            yield tuple(array[start:stop] for array in self.arrays), stop - start


class IterableData:
    """The user's re-iterable of batches (a ``DataLoader``, a list), used as it comes.

    Every :meth:`stream` is a pass of its own over the iterable: a second stream of a
    reshuffling ``DataLoader`` draws its batches independently of the first, which is how
    the trace's losses are taken on batches the chain did not step on.
    """

    def __init__(self, batches: Iterable[Any], num_data: int, backend: Backend, like: Array):
        self.batches = batches
        self.num_data = num_data
        self.batch_size: int | None = None
        self.backend = backend
        self.like = like

    def _convert(self, batch: Any) -> Any:
        """The batch's arrays on the params' device and floating dtype; text (a tokenizer's
        strings) and ``None`` pass through for ``loss_fn`` to ignore."""
        return tree_map(lambda leaf: leaf if leaf is None or isinstance(leaf, (str, bytes))
                        else self.backend.asarray(leaf, like=self.like), batch)

    def stream(self, key: Key, start: int = 0) -> Generator[Any, None, None]:
        """Endless batches: the iterable restarted whenever it runs out. The first ``start``
        batches are drawn and skipped (a resumed run), so the iterable's own randomness
        advances as in an uninterrupted run."""
        skip = start
        while True:
            empty = True
            for batch in self.batches:
                empty = False
                if skip:
                    skip -= 1
                    continue
                yield self._convert(batch)
            if empty:
                raise ValueError("`data` yielded no batches")

    def evaluation_batches(self, max_batches: int | None) -> Iterator[tuple[Any, int]]:
        """One pass (or ``max_batches``) over the batches, with their leading sizes."""
        for count, batch in enumerate(self.batches):
            if max_batches is not None and count >= max_batches:
                return
            leaves, _ = tree_flatten(batch)
            sized = [leaf for leaf in leaves if len(getattr(leaf, "shape", ())) > 0]
            if not sized:
                raise ValueError("a batch of `data` holds no array with a leading batch "
                                 "dimension")
            yield self._convert(batch), int(sized[0].shape[0])


def _is_any_array(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    return any(backend.is_array(obj) for backend in _loaded_backends())


def make_data(
    data: Any,
    *,
    num_data: int | None,
    batch_size: int | None,
    backend: Backend,
    like: Array,
    with_replacement: bool = True,
) -> ArrayData | IterableData:
    """Validate ``data`` and wrap it as :class:`ArrayData` (drawn ``with_replacement`` or
    in shuffled epochs) or :class:`IterableData`."""
    if _is_any_array(data):
        raise TypeError(
            "`data` must be a tuple of arrays sharing the leading dimension, e.g. (x, y), or "
            "a re-iterable of batches; got a single array (wrap it as (x,))"
        )
    if isinstance(data, (str, bytes, Mapping)):
        raise TypeError(
            "`data` must be a tuple of arrays (x, y) or a re-iterable of batches (a "
            f"DataLoader, a list); got a {type(data).__name__}"
        )
    if isinstance(data, tuple):
        if not data:
            raise ValueError("`data` is an empty tuple: expected arrays such as (x, y)")
        for index, array in enumerate(data):
            if not _is_any_array(array):
                raise TypeError(
                    f"`data[{index}]` must be an array (NumPy or the params' framework); got "
                    f"{type(array).__name__}. Pass batches as a list or DataLoader instead"
                )
            if len(array.shape) == 0:
                raise ValueError(f"`data[{index}]` is a scalar: expected a leading data dimension")
            if isinstance(array, np.ndarray) and array.dtype.kind not in "biufc":
                raise TypeError(f"`data[{index}]` has dtype {array.dtype}; expected numbers "
                                "(bool, integer, floating or complex)")
        sizes = [int(array.shape[0]) for array in data]
        if len(set(sizes)) > 1:
            raise ValueError(f"`data` arrays must share the leading dimension; got sizes {sizes}")
        n = sizes[0]
        if n == 0:
            raise ValueError("`data` is empty: the arrays have no rows")
        if num_data is not None and positive_int("num_data", num_data) != n:
            raise ValueError(
                f"`num_data`={num_data} differs from the {n} rows of `data`; leave it unset "
                "for array data (pass `nbeta` to use another temperature)"
            )
        if batch_size is None:
            batch_size = min(256, n)
        batch_size = positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"`batch_size`={batch_size} exceeds the {n} rows of `data`")
        for index, array in enumerate(data):
            if isinstance(array, np.ndarray) and np.issubdtype(array.dtype, np.floating) \
                    and not np.isfinite(array).all():
                raise ValueError(f"`data[{index}]` contains NaN or infinite values")
        arrays = tuple(backend.asarray(array, like=like) for array in data)
        for index, (given, array) in enumerate(zip(data, arrays)):
            if not isinstance(given, np.ndarray):  # one reduction on the device, no host copy
                probe = backend.to_numpy(backend.namespace(array).sum(array * 0))
                if not np.isfinite(np.asarray(probe)).all():
                    raise ValueError(f"`data[{index}]` contains NaN or infinite values")
        return ArrayData(arrays, batch_size, backend, with_replacement)

    if not isinstance(data, Iterable):
        raise TypeError(
            "`data` must be a tuple of arrays (x, y) or a re-iterable of batches (a "
            f"DataLoader, a list); got {type(data).__name__}"
        )
    if isinstance(data, Iterator):  # not iter(data): a DataLoader's iter draws global RNG
        raise TypeError(
            "`data` is a one-shot iterator (e.g. a generator); pass a re-iterable such as a "
            "list or a DataLoader, since every chain and the loss at w* iterate it again"
        )
    if num_data is None:
        hint = ""
        if isinstance(data, list) and 2 <= len(data) <= 4 \
                and all(_is_any_array(item) and len(item.shape) > 0 for item in data) \
                and len({int(item.shape[0]) for item in data}) == 1:
            rows = int(data[0].shape[0])
            hint = (f"; did you mean a tuple (x, y)? A list is read as {len(data)} batches, "
                    f"each one array, while a tuple of arrays sharing their {rows} "
                    "rows is the data set")
        raise ValueError(
            "`num_data` is required when `data` is an iterable of batches: the number of "
            "training samples n sets the default nβ = n / log n" + hint
        )
    if batch_size is not None:
        raise ValueError(
            "`batch_size` applies to array data only; an iterable's batches are used as they come"
        )
    return IterableData(data, positive_int("num_data", num_data), backend, like)
