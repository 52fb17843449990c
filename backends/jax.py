"""JAX adapter: params are any pytree of ``jax.Array`` (dicts, flax ``params``, equinox arrays).

Gradients come from ``jax.value_and_grad`` on the flat parameter vector
(``jax.flatten_util.ravel_pytree``), compiled with ``jax.jit``, and the sampler's whole step is
compiled too (:meth:`JaxBackend.compile`). Keys are ``jax.random`` keys. float64 needs
``jax.config.update("jax_enable_x64", True)`` in your program: llc never changes JAX's
configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _rng

__all__ = ["backend"]


class JaxBackend:
    """Adapter for ``jax.Array`` parameters on any JAX device."""

    name = "jax"
    has_autodiff = True

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

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None
                   ) -> jax.Array:
        array = jnp.asarray(np.asarray(x), dtype=dtype)
        if device is None:
            return array
        platform, _, index = str(device).partition(":")
        platform = {"cuda": "gpu"}.get(platform, platform)
        return jax.device_put(array, jax.devices(platform)[int(index or 0)])

    def to_numpy(self, x: jax.Array) -> np.ndarray:
        return np.array(jax.device_get(x), copy=True)

    def stack(self, xs: list[jax.Array]) -> jax.Array:
        return jnp.stack(xs)

    def take(self, x: jax.Array, indices: jax.Array) -> jax.Array:
        return jnp.take(x, indices, axis=0)

    def describe(self, x: jax.Array) -> dict[str, str]:
        device = self._device(x)
        if device is None or device.platform == "cpu":
            name = "cpu"
        else:
            name = f"{'cuda' if device.platform == 'gpu' else device.platform}:{device.id}"
        return {"device": name, "dtype": str(x.dtype)}

    # ---- params -------------------------------------------------------------------------
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
        return flat, unravel

    # ---- loss and grad ------------------------------------------------------------------
    def value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def scalar_loss(flat: jax.Array, batch: Any) -> jax.Array:
            loss = loss_fn(unravel(flat), batch)
            if not isinstance(loss, jax.Array) or jnp.size(loss) != 1:
                raise ValueError(
                    "`loss_fn` must return a scalar loss (the mean over the batch) as a JAX "
                    f"array; got {type(loss).__name__} of shape {jnp.shape(loss)}"
                )
            if not jnp.issubdtype(loss.dtype, jnp.floating):
                raise TypeError(f"`loss_fn` must return a floating-point loss; got {loss.dtype}")
            return jnp.reshape(loss, ())

        return jax.jit(jax.value_and_grad(scalar_loss))

    def value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        return jax.jit(lambda flat, batch: jnp.reshape(loss_fn(unravel(flat), batch), ()))

    def compile(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step(key, state, batch, diagnose)`` compiled with ``jax.jit``."""
        compiled = jax.jit(step, static_argnames=("diagnose",))
        return lambda key, state, batch, diagnose=False: compiled(key, state, batch,
                                                                  diagnose=diagnose)

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
        order = jax.random.permutation(key, n)
        device = self._device(like)
        return order if device is None else jax.device_put(order, device)

    @contextlib.contextmanager
    def isolated_global_rng(self, seed: int) -> Iterator[None]:
        yield  # JAX has no global random state


backend = JaxBackend()
