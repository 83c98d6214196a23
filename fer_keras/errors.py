"""Errors that the CLIs report as one `error:` line instead of a traceback."""


class FerError(ValueError):
    """Bad input or configuration a user can fix; its message says what and where."""


class DataError(FerError):
    """Malformed dataset input; the message names the file and the line."""


class DivergedError(FerError):
    """Training stopped because the loss became NaN or infinite."""


class ImageError(FerError):
    """An image that cannot be used: an unreadable file, or an array of the wrong type, shape or size."""


class ModelError(FerError):
    """A model path that does not exist or cannot be loaded as a fer_keras model."""


class VideoError(FerError):
    """A video that cannot be opened or decoded (missing, corrupt or in an unsupported format)."""
