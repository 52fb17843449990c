"""The README's Equinox example: λ̂ of a small trained Equinox MLP via the one-liner."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import llc
from llc.backends.jax import from_equinox

rng = np.random.default_rng(0)                                  # a teacher-student regression
x = jnp.asarray(rng.normal(size=(2048, 3)), jnp.float32)
y = jnp.asarray(np.tanh(np.asarray(x) @ rng.normal(size=(3, 2))), jnp.float32)
model = eqx.nn.MLP(3, 2, width_size=8, depth=1, activation=jnp.tanh, key=jax.random.key(0))


def mse(outputs, targets):                                      # mean Gaussian NLL (σ = 1)
    return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=1))


optimizer = optax.adam(1e-2)                                    # train to near a minimum
state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))


@eqx.filter_jit
def train(model, state):
    grads = eqx.filter_grad(lambda m: mse(jax.vmap(m)(x), y))(model)
    updates, state = optimizer.update(grads, state)
    return eqx.apply_updates(model, updates), state


for _ in range(3000):
    model, state = train(model, state)

loss_fn, params = from_equinox(model, mse)     # vmaps the model over the batch
result = llc.estimate(loss_fn, params, (x, y), step_size=3e-4, batch_size=256,
                      num_draws=4000, num_burnin=1000, baseline="minibatch")
print(result)
