"""A Vision Transformer backbone from keras_hub (small configuration, random weights).

`keras_hub.models.ViTBackbone` on 32x32x3 images in 8x8 patches: class token,
position embedding, 2 encoder layers with exact GELU (`Erfc` in TensorFlow).
"""

import keras
import keras_hub


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        name="vit")
