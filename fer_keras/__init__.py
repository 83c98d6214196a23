"""fer_keras: facial-expression recognition on FER2013 with Keras 3 and TensorFlow."""

from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "IMAGE_SHAPE", "NUM_CLASSES", "EmotionRecognizer", "__version__"]


def __getattr__(name):
    """`fer_keras.EmotionRecognizer`, imported on first use so `import fer_keras` does not load TensorFlow."""
    if name == "EmotionRecognizer":
        from fer_keras.inference.api import EmotionRecognizer

        return EmotionRecognizer
    raise AttributeError(f"module 'fer_keras' has no attribute {name!r}")
