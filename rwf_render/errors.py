"""Errors a user can cause.

Anything raised as :class:`UserError` ends the ``rwf`` command with one line on stderr and exit code 2 (see
``cli.main``). A failure of the machine (a folder that cannot be written, a full disk, memory run out) is one
line and exit code 1. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (path, file contents, options), reported as one line, exit code 2."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
