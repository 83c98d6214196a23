"""Small Vision Transformer for 48x48 faces (https://arxiv.org/abs/2010.11929).

Pre-norm encoder blocks (LayerNorm before attention and MLP, as in the paper), GELU MLPs and light
dropout: the original notebook's ViT collapsed to 1.5% accuracy with heavy regularisation, no
normalisation and no learning-rate warm-up (the trainer provides `warmup_epochs`).
"""

from functools import partial

import keras
from keras import layers

from fer_keras.models.common import dense_head, image_input, logits
from fer_keras.models.layers import ClassToken, PatchEmbedding, PositionEmbedding
from fer_keras.models.registry import register_model


def _encoder_block(x, *, name, heads, mlp_dim, dropout):
    """x + Attention(LN(x)), then x + MLP(LN(x)), with dropout on each residual branch."""
    norm = partial(layers.LayerNormalization, epsilon=1e-6)
    width = x.shape[-1]

    y = norm(name=f"{name}_ln1")(x)
    y = layers.MultiHeadAttention(heads, width // heads, name=f"{name}_attention")(y, y)
    y = layers.Dropout(dropout, name=f"{name}_attention_dropout")(y)
    x = layers.Add(name=f"{name}_add1")([x, y])

    y = norm(name=f"{name}_ln2")(x)
    y = layers.Dense(mlp_dim, activation="gelu", name=f"{name}_mlp1")(y)
    y = layers.Dense(width, name=f"{name}_mlp2")(y)
    y = layers.Dropout(dropout, name=f"{name}_mlp_dropout")(y)
    return layers.Add(name=f"{name}_add2")([x, y])


@register_model
def vit(*, patch_size=8, width=64, depth=4, heads=4, mlp_dim=128, dropout=0.1, dense_units=(64, 32)):
    """ViT: 8x8 patches (36 tokens), width 64, 4 pre-norm encoder layers, 4 heads https://arxiv.org/abs/2010.11929"""
    inputs, x = image_input()

    # Tokens: patch projections, a class token, learned positions.
    x = PatchEmbedding(patch_size, width, name="patch_embedding")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    x = layers.Dropout(dropout, name="embedding_dropout")(x)

    # Encoder
    for i in range(1, depth + 1):
        x = _encoder_block(x, name=f"encoder{i}", heads=heads, mlp_dim=mlp_dim, dropout=dropout)
    x = layers.LayerNormalization(epsilon=1e-6, name="encoder_ln")(x)

    # Head: the class token's output through a GELU MLP.
    x = layers.Cropping1D((0, x.shape[1] - 1), name="class_token_output")(x)
    x = layers.Flatten(name="flatten")(x)
    x = dense_head(x, dense_units, dropout=dropout, activation="gelu")
    return keras.Model(inputs, logits(x), name="vit")
