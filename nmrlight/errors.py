"""Errors that the CLI reports as a clear message and a non-zero exit, never a traceback."""


class NmrlightError(ValueError):
    """A user-facing error: bad input file, field or value. The message names what is wrong."""
