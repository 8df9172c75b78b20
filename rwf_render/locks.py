"""Advisory file locks and staging folders shared by the run directory and the data tools: a lock taken without
waiting, and hidden staging folders whose maker holds a lock on them, so that a later command can tell a folder a
killed command left (swept) from one a running command works in (kept).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def flock(path: Path, mode: int, wait: bool = False) -> int | None:
    """An open descriptor of ``path`` (a file or a folder) holding ``flock(mode | LOCK_NB)``; None where the system
    or the file system has no such locks or ``path`` cannot be opened; BlockingIOError when another process holds a
    conflicting lock. ``wait``: block until the lock is free instead (Ctrl+C stops the wait)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # Windows: no advisory locks
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # a file system without locks (some network mounts)
        os.close(fd)
        return None
    except BaseException:  # Ctrl+C while waiting
        os.close(fd)
        raise
    return fd


STALE_AFTER_S = 30.0
"""how long a staging folder must have been left untouched before another command may sweep it (with its lock
free): a folder made a moment ago may not hold its maker's lock yet"""


def staging_dir(prefix: str, suffix: str, folder: Path) -> tuple[Path, int | None]:
    """``tempfile.mkdtemp`` in ``folder``, with an exclusive lock on the new folder held by the returned descriptor
    (close it when done; None where there are no locks): :func:`sweep_stale` removes only folders whose maker has
    gone (a kill -9 left its staging behind, and nothing else ever removed it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder))
    try:
        import fcntl  # noqa: PLC0415
        fd = flock(path, fcntl.LOCK_EX)
    except (ImportError, BlockingIOError):
        fd = None
    return path, fd


def sweep_stale(folder: Path, prefix: str, suffix: str = "") -> None:
    """Remove the staging folders ``PREFIX<8 characters>SUFFIX`` in ``folder`` that a killed command left: no
    process holds their lock (:func:`staging_dir`) and nothing changed in them for ``STALE_AFTER_S`` seconds."""
    import time  # noqa: PLC0415
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:
        return
    name = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix) + "$")
    try:
        children = list(folder.iterdir())
    except OSError:
        return
    for child in children:
        if not name.match(child.name) or child.is_symlink() or not child.is_dir():
            continue
        try:
            if time.time() - child.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = flock(child, fcntl.LOCK_EX)
        except (OSError, BlockingIOError):
            continue  # its maker still runs
        if fd is None:
            continue  # no locks here: cannot tell a live maker from a dead one
        try:
            shutil.rmtree(child, ignore_errors=True)
        finally:
            os.close(fd)
