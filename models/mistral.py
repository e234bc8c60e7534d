"""A Mistral decoder backbone from keras_hub (small configuration, random weights)
with a dynamic sequence length and a sliding window of 4 tokens.

`keras_hub.models.MistralBackbone` takes `token_ids` and `padding_mask` of shape
(batch, sequence), both dynamic. The export finds that their sequence dims must be
equal and names them `sequence`, in the SavedModel's signature, the ONNX model and
the manifest (the output too); it verifies every artifact at lengths 1, 5 and 7 (past
the window, where the banded attention mask cuts keys off), with padding masks
padded and unpadded, and the manifest records those sizes. Token ids stay below the
vocabulary size (inferred from the token embedding).
"""

import keras
import keras_hub

SLIDING_WINDOW = 4


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras_hub.models.MistralBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=64, sliding_window=SLIDING_WINDOW, name="mistral")
