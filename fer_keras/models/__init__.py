"""Architecture zoo: every builder registers itself on import of its module."""

from fer_keras.models import cbam, cnn, mlp, resnet, vit, xception  # noqa: F401  (registers the builders)
from fer_keras.models.registry import build_model, default_hparams, describe, list_models, register_model

__all__ = ["build_model", "default_hparams", "describe", "list_models", "register_model"]
