"""An MLP whose weights come from a short real training run on generated data.

The task: classify points of two interleaved spirals. 300 steps of Adam on a
fixed, seeded data set; the exported weights are the trained ones.
"""

import keras
import numpy as np

STEPS = 300


def _spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = rng.uniform(0.5, 3.0, n) * np.pi
    label = rng.integers(0, 2, n)
    radius = t / (3.0 * np.pi)
    angle = t + label * np.pi
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return (points + rng.normal(0, 0.02, points.shape)).astype("float32"), label.astype("int32")


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(2,), name="point")
    x = keras.layers.Dense(32, activation="relu", name="hidden1")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="hidden2")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="class_probabilities")(x)
    model = keras.Model(inputs, outputs, name="trained_mlp")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    points, labels = _spirals(1024, np.random.default_rng(0))
    batch = 64
    for step in range(STEPS):
        start = (step * batch) % len(points)
        model.train_on_batch(points[start:start + batch], labels[start:start + batch])
    return model
