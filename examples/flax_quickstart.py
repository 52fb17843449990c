"""The README's Flax example: λ̂ of a small trained Flax (linen) MLP via the one-liner."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import llc
from llc.backends.jax import from_flax


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.tanh(nn.Dense(8)(x)))


rng = np.random.default_rng(0)                                  # a teacher-student regression
x = jnp.asarray(rng.normal(size=(2048, 3)), jnp.float32)
y = jnp.asarray(np.tanh(np.asarray(x) @ rng.normal(size=(3, 2))), jnp.float32)
model = MLP()
variables = model.init(jax.random.key(0), x)


def mse(outputs, targets):                                      # mean Gaussian NLL (σ = 1)
    return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=1))


optimizer = optax.adam(1e-2)                                    # train to near a minimum
state = optimizer.init(variables)


@jax.jit
def train(variables, state):
    grads = jax.grad(lambda v: mse(model.apply(v, x), y))(variables)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(variables, updates), state


for _ in range(3000):
    variables, state = train(variables, state)

loss_fn, params = from_flax(model.apply, variables, mse)
result = llc.estimate(loss_fn, params, (x, y), step_size=3e-4, batch_size=256,
                      num_draws=4000, num_burnin=1000, baseline="minibatch")
print(result)
