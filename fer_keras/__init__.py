"""fer_keras: facial-expression recognition on FER2013 with Keras 3 and TensorFlow."""

from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "IMAGE_SHAPE", "NUM_CLASSES", "__version__"]
