"""Errors that the CLIs report as one `error:` line instead of a traceback."""


class FerError(ValueError):
    """Bad input or configuration a user can fix; its message says what and where."""


class DataError(FerError):
    """Malformed dataset input; the message names the file and the line."""


class DivergedError(FerError):
    """Training stopped because the loss became NaN or infinite."""
