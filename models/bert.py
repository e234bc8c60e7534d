"""A BERT encoder backbone from keras_hub (small configuration, random weights).

`keras_hub.models.BertBackbone` on 16 tokens: token ids (below the
vocabulary size, inferred from the token embedding), segment ids (below the
number of segments, inferred from the segment embedding) and a padding mask of
ones (declared by `input_ranges`); exact GELU; outputs `sequence_output` and
`pooled_output`.
"""

import keras
import keras_hub

SEQUENCE_LENGTH = 16


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.0,
        max_sequence_length=SEQUENCE_LENGTH, name="bert_backbone")
    inputs = {name: keras.Input((SEQUENCE_LENGTH,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    return keras.Model(inputs, backbone(inputs), name="bert")


def input_ranges() -> dict:
    """Values of the inputs no embedding tells: the padding mask is all ones."""
    return {"padding_mask": (1, 2)}
