"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class MedMambaError(Exception):
    """Bad input or environment; the message names the file and the problem."""
