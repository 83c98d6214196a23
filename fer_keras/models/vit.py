"""Small Vision Transformers for 48x48 faces (https://arxiv.org/abs/2010.11929).

`vit` is one that trains: pre-norm encoder blocks (LayerNorm before attention and MLP, as in the
paper), GELU MLPs, light dropout, and the trainer's `warmup_epochs`. `p002_vit` is project 002's
ViT as its notebook built it, which collapsed to 1.53% validation accuracy (every face called
Disgust): PyTorch's nn.TransformerEncoderLayer defaults (post-norm, ReLU MLP of 2048, dropout 0.1)
fed (batch, tokens, dim) without batch_first=True, so each token attended to the same token of
the other images instead of to its own image. The class token, the same in every image, then only
ever sees copies of itself: the classifier's input, and so the output, is one constant.
"""

from functools import partial

import keras
from keras import layers

from fer_keras.models.common import dense_head, image_input, logits
from fer_keras.models.layers import ClassToken, PatchEmbedding, PositionEmbedding, SwapBatchAxis
from fer_keras.models.registry import register_model


def _tokens(x, *, patch_size, width, token_stddev=0.0, position_stddev=0.02):
    """Patch projections, a class token in front, learned positions."""
    x = PatchEmbedding(patch_size, width, name="patch_embedding")(x)
    x = ClassToken(token_stddev, name="class_token")(x)
    return PositionEmbedding(position_stddev, name="position_embedding")(x)


def _class_token_head(x, dense_units, *, dropout=0.0, activation):
    """The class token's output through the dense head to the logits."""
    x = layers.Cropping1D((0, x.shape[1] - 1), name="class_token_output")(x)
    x = layers.Flatten(name="flatten")(x)
    return logits(dense_head(x, dense_units, dropout=dropout, activation=activation))


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


def _torch_encoder_block(x, *, name, heads, mlp_dim, dropout):
    """PyTorch's post-norm encoder layer fed batch-first: LN(x + Attention(x)), then LN(x + MLP(x)),
    with the attention running across the batch axis."""
    norm = partial(layers.LayerNormalization, epsilon=1e-5)
    width = x.shape[-1]

    y = SwapBatchAxis(name=f"{name}_batch_as_sequence")(x)
    y = layers.MultiHeadAttention(heads, width // heads, dropout=dropout, name=f"{name}_attention")(y, y)
    y = SwapBatchAxis(name=f"{name}_batch_back")(y)
    y = layers.Dropout(dropout, name=f"{name}_attention_dropout")(y)
    x = norm(name=f"{name}_ln1")(layers.Add(name=f"{name}_add1")([x, y]))

    y = layers.Dense(mlp_dim, activation="relu", name=f"{name}_mlp1")(x)
    y = layers.Dropout(dropout, name=f"{name}_mlp1_dropout")(y)
    y = layers.Dense(width, name=f"{name}_mlp2")(y)
    y = layers.Dropout(dropout, name=f"{name}_mlp_dropout")(y)
    return norm(name=f"{name}_ln2")(layers.Add(name=f"{name}_add2")([x, y]))


@register_model
def vit(*, patch_size=8, width=64, depth=4, heads=4, mlp_dim=128, dropout=0.1, dense_units=(64, 32)):
    """ViT: 8x8 patches (36 tokens), width 64, 4 pre-norm encoder layers, 4 heads https://arxiv.org/abs/2010.11929"""
    inputs, x = image_input()

    # Tokens
    x = _tokens(x, patch_size=patch_size, width=width)
    x = layers.Dropout(dropout, name="embedding_dropout")(x)

    # Encoder
    for i in range(1, depth + 1):
        x = _encoder_block(x, name=f"encoder{i}", heads=heads, mlp_dim=mlp_dim, dropout=dropout)
    x = layers.LayerNormalization(epsilon=1e-6, name="encoder_ln")(x)

    # Head: the class token's output through a GELU MLP.
    return keras.Model(inputs, _class_token_head(x, dense_units, dropout=dropout, activation="gelu"), name="vit")


@register_model
def p002_vit(*, patch_size=8, width=64, depth=4, heads=4, mlp_dim=2048, dropout=0.1, dense_units=(32,)):
    """Project 002's ViT as it was: post-norm, attends across the batch (collapsed) https://arxiv.org/abs/2010.11929"""
    inputs, x = image_input()

    # Tokens: the notebook drew the class token and the positions from N(0, 1).
    x = _tokens(x, patch_size=patch_size, width=width, token_stddev=1.0, position_stddev=1.0)

    # Encoder: no final LayerNorm (nn.TransformerEncoder without `norm`).
    for i in range(1, depth + 1):
        x = _torch_encoder_block(x, name=f"encoder{i}", heads=heads, mlp_dim=mlp_dim, dropout=dropout)

    # Head: the class token's output through Linear-ReLU-Linear.
    return keras.Model(inputs, _class_token_head(x, dense_units, activation="relu"), name="p002_vit")
