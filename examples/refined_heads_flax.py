"""Per-head weight-refined λ̂ in JAX: the restriction API on a Flax attention layer.

A one-layer, two-head ``nn.MultiHeadDotProductAttention`` is the teacher: head 0 is a generic
head, head 1 is dead (its value and output weights are zero, so its query and key weights
change nothing). The data are the teacher's outputs on random sequences plus noise, w* is the
teacher, and ``llc.backends.jax.attention_heads`` gives each head's coordinates (its slices
of the query, key, value and output weights) for ``restrict=``: λ̂ of the live head is several
times that of the dead one, whose coordinates the loss sees only through the product of its
value and output weights. ``--quick`` is the test suite's short version; docs/refined.md has
the output.
"""

import argparse
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import llc
from llc.backends.jax import attention_heads, from_flax

EMBED, HEADS, LENGTH = 8, 2, 5


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=EMBED)(x)


def teacher_and_data(n: int):
    """The teacher's variables, with head 1 dead, and (x, y) with y = teacher(x) + noise."""
    model = Attention()
    x = jax.random.normal(jax.random.key(0), (n, LENGTH, EMBED), dtype=jnp.float32)
    variables = model.init(jax.random.key(1), x[:1])
    attention = variables["params"]["MultiHeadDotProductAttention_0"]
    dead = {  # value (features, heads, head_dim) and output (heads, head_dim, features): head 1 off
        "value": {**attention["value"],
                  "kernel": attention["value"]["kernel"].at[:, 1].set(0.0),
                  "bias": attention["value"]["bias"].at[1].set(0.0)},
        "out": {**attention["out"], "kernel": attention["out"]["kernel"].at[1].set(0.0)},
    }
    variables = {"params": {"MultiHeadDotProductAttention_0": {**attention, **dead}}}
    noise = 0.1 * jax.random.normal(jax.random.key(2), (n, LENGTH, EMBED), dtype=jnp.float32)
    return model, variables, (x, model.apply(variables, x) + noise)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer data and draws")
    args = parser.parse_args()
    n = 500 if args.quick else 4000
    model, variables, data = teacher_and_data(n)
    loss_fn, params = from_flax(model.apply, variables,
                                lambda out, y: 0.5 * jnp.mean(jnp.sum((out - y) ** 2, -1)))
    heads = attention_heads(params)
    print(f"n = {n}, {sum(mask.size for mask in heads.values())} head coordinates "
          f"of {sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params))} parameters")
    print("| head | d_V | λ̂ ± MCSE | findings |\n|---|---|---|---|")
    for name, mask in heads.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", llc.LLCHealthWarning)
            result = llc.estimate(loss_fn, params, data, restrict=mask, step_size="auto",
                                  batch_size=100, num_chains=4,
                                  num_draws=200 if args.quick else 1000,
                                  num_burnin=200 if args.quick else 1000, seed=0,
                                  progress=False)
        codes = ", ".join(f.code for f in result.findings) or "—"
        print(f"| {name} | {result.attrs['num_params']} | {result.llc_mean:.2f} ± "
              f"{result.llc_mcse:.2f} | {codes} |")


if __name__ == "__main__":
    main()
