"""Predicts a price from 4 numeric features (the README's worked example)."""

import keras


def build_model() -> keras.Model:
    keras.utils.set_random_seed(42)
    features = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(features)
    price = keras.layers.Dense(1, name="price")(hidden)
    return keras.Model(features, price, name="price_model")
