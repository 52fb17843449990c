"""Per-head weight-refined λ̂ in Keras 3 (TensorFlow): the restriction API on a
``keras.layers.MultiHeadAttention`` layer.

The same experiment as examples/refined_heads_flax.py: a two-head attention layer is the
teacher, head 1 dead (its value and output weights zero), the data its outputs on random
sequences plus noise, w* the teacher; ``llc.backends.tensorflow.attention_heads(model)``
gives each head's coordinates for ``restrict=``. ``--quick`` is the test suite's short
version; docs/refined.md has the output.
"""

import argparse
import warnings

import keras
import numpy as np
import tensorflow as tf

import llc
from llc.backends.tensorflow import attention_heads, from_keras

EMBED, HEADS, LENGTH = 8, 2, 5


def teacher_and_data(n: int):
    """The teacher model, with head 1 dead, and (x, y) with y = teacher(x) + noise."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((LENGTH, EMBED))
    outputs = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=EMBED // HEADS,
                                              name="attention")(inputs, inputs)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("attention")
    for variable in layer.weights:  # value (features, heads, dim), output (heads, dim, features)
        value = np.array(variable.numpy())
        if variable.path.endswith("value/kernel"):
            value[:, 1] = 0.0
        elif variable.path.endswith(("value/bias", "attention_output/kernel")):
            value[1] = 0.0
        else:
            continue
        variable.assign(value)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, LENGTH, EMBED)).astype("float32")
    y = np.asarray(model(x)) + 0.1 * rng.normal(size=(n, LENGTH, EMBED)).astype("float32")
    return model, (tf.constant(x), tf.constant(y))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer data and draws")
    args = parser.parse_args()
    n = 500 if args.quick else 4000
    model, data = teacher_and_data(n)
    loss_fn, params = from_keras(model, lambda y, out: 0.5 * keras.ops.mean(
        keras.ops.sum((out - y) ** 2, axis=-1)))
    heads = attention_heads(model)
    print(f"n = {n}, {sum(mask.size for mask in heads.values())} head coordinates "
          f"of {model.count_params()} parameters")
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
