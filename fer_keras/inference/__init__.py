"""Using a trained model: the Python API, the predict command, faces and detectors, test-time
augmentation, video and the web server."""
