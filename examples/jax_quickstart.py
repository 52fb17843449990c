"""The README's JAX example: λ̂ of a deep linear network written in plain JAX."""

import jax
import jax.numpy as jnp

import llc

jax.config.update("jax_enable_x64", True)              # optional: sample in float64

problem = llc.problems.DeepLinearNetwork(widths=(4, 5, 3, 4), rank=2)   # true λ = 7
data, params = problem.setup(n=10_000, seed=0)         # NumPy data and the exact minimiser
params = {name: jnp.asarray(value) for name, value in params.items()}   # any pytree works


def loss_fn(params, batch):                            # mean Gaussian NLL (up to a constant)
    x, y = batch
    out = x @ params["W1"].T @ params["W2"].T @ params["W3"].T
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))


result = llc.estimate(loss_fn, params, data, step_size=3e-5, batch_size=500,
                      num_draws=4000, num_burnin=1000, baseline="minibatch")
print(result)
