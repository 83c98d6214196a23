"""Errors that the CLIs report as one `error:` line instead of a traceback."""

import reprlib

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 2, 80, 80
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 8


def brief(value):
    """`repr(value)` for an error message, bounded in length and in the time it takes (a YAML alias bomb
    is a small file holding a list of a billion items)."""
    return _BRIEF.repr(value)


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
