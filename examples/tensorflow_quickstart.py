"""The README's TensorFlow example: train a small Keras model, estimate its λ̂."""

import numpy as np, keras, tensorflow as tf, llc
from llc.backends.tensorflow import from_keras

keras.utils.set_random_seed(0)                         # a small trained regression model
rng = np.random.default_rng(0)
x = rng.standard_normal((4096, 5)).astype("float32")
y = (np.tanh(x @ rng.standard_normal((5, 1)))
     + 0.5 * rng.standard_normal((4096, 1))).astype("float32")
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                          keras.layers.Dense(1)])
schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=6000)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse", steps_per_execution=500)
model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(6000), shuffle=False, verbose=0)  # full batch

loss_fn, params = from_keras(model, keras.losses.MeanSquaredError())   # w* = a copy
result = llc.estimate(loss_fn, params, (x, y), step_size=2e-4, batch_size=256,
                      num_chains=4, num_draws=2000, num_burnin=500, baseline="minibatch")
print(result)
