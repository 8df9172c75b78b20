"""Errors a user can cause.

Anything raised as :class:`UserError` ends the ``rwf`` command with one line on stderr and exit code 2 (see
``cli.main``). A failure of the machine (a folder that cannot be written, a full disk, memory run out) is one
line and exit code 1. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (path, file contents, options), reported as one line, exit code 2."""


class Diverged(UserError):
    """The fit's loss (or its weights) stopped being finite: training stops, the last finite checkpoint stays."""


class RwfWarning(UserWarning):
    """A warning of this toolkit about the user's data or setup (a frame without its image, a backend fallback):
    the ``rwf`` commands print it as one line ``rwf: warning: ...``; other warnings keep Python's form."""


class RwfRuntimeWarning(RwfWarning, RuntimeWarning):
    """An :class:`RwfWarning` about the machine (a compiled kernel unavailable)."""


def out_of_memory(e: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), or the plain RuntimeError its CPU allocator raises."""
    import sys  # noqa: PLC0415

    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def ignored_options(names: list[str], applies: str) -> UserError:
    """The refusal of options typed where they would be ignored: ``--a, --b apply to APPLIES``."""
    return UserError(f"{', '.join(names)} appl{'ies' if len(names) == 1 else 'y'} to {applies}")
