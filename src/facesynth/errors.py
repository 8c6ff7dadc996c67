"""The one exception type users see: a clear message, no traceback."""


class FacesynthError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""
