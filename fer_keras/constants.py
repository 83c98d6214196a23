"""The FER2013 task: 48x48 grayscale faces, 7 expression classes."""

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
