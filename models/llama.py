"""A Llama decoder backbone from keras_hub (small configuration, random weights).

`keras_hub.models.LlamaBackbone` on 16 tokens: rotary position embeddings,
grouped-query attention (4 query heads, 2 key/value heads), RMS normalization,
SwiGLU feed-forward, causal mask. Token ids stay below the vocabulary size
(inferred from the token embedding); the padding mask is all ones
(`input_ranges`).
"""

import keras
import keras_hub

SEQUENCE_LENGTH = 16


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=64, name="llama_backbone")
    inputs = {name: keras.Input((SEQUENCE_LENGTH,), dtype="int32", name=name)
              for name in ("token_ids", "padding_mask")}
    return keras.Model(inputs, backbone(inputs), name="llama")


def input_ranges() -> dict:
    """Values of the inputs no embedding tells: the padding mask is all ones."""
    return {"padding_mask": (1, 2)}
