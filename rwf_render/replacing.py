"""``rwf fit --force`` without losing the old run to an early end: the old run is set aside in a hidden folder
inside the run folder until the new run's first checkpoint, put back when the command ends before it (an error, a
Ctrl+C), and settled by the next command on the folder after a kill -9.

The hidden folder is ``.rwf-replaced-XXXXXXXX`` (``tempfile.mkdtemp``'s name) with a mark file saying its state:
``moving`` (files going in: nothing of a new run written yet), ``held`` (the new run may be writing; a checkpoint
of it means the old run goes), ``returning`` (the new run's files deleted, the old ones coming back). A folder being
deleted is renamed ``... .drop`` first. Camera paths the viewer saved in the run stay in place throughout
(:func:`rwf_render.rundir.kept_by_force`), in a --compare's sub-runs too. :mod:`rwf_render.rundir` calls in here
from ``prepare_run_dir``, ``save_checkpoint``, ``release_run_dirs`` and ``load_run_config``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from .locks import flock
from .rundir import _LOCKS, CHECKPOINT, COMPARE_PARAMS, _contents, kept_by_force

_REPLACING: dict[str, Path] = {}
"""run folders this command's ``--force`` is replacing (real path -> the hidden folder inside it that holds the old
run) until the new run's first checkpoint (``rundir.save_checkpoint``); a command that ends before it puts the old
run back (``rundir.release_run_dirs``), and so does the next command on the folder after a kill -9"""

REPLACED_PREFIX = ".rwf-replaced-"
"""the name of the hidden folder that holds a run ``--force`` is replacing"""

REPLACED_MARK = ".rwf-replaced"
"""the file in that folder that says its state: moving, held, returning"""

DROPPED_SUFFIX = ".drop"
"""the hidden folder's name once it is being deleted"""

_REPLACED_NAME = re.compile(rf"^{re.escape(REPLACED_PREFIX)}[a-z0-9_]{{8}}({re.escape(DROPPED_SUFFIX)})?$")
"""the names ``tempfile.mkdtemp`` gives those folders (a user's own folder of another like name is never touched)"""


def put_back_all() -> None:
    """The command ends (``rundir.release_run_dirs``): every run it was replacing and whose new run has no
    checkpoint comes back (an error, or a Ctrl+C)."""
    while _REPLACING:
        key, held = _REPLACING.popitem()
        _put_back(Path(key), held)


def checkpoint_saved(path: Path) -> None:
    """``rundir.save_checkpoint`` wrote ``path``: the run it replaces (if any) goes."""
    if _REPLACING:
        _finish_replacing(Path(path).parent)


def run_dirs_replacing() -> bool:
    """Whether a run this command's ``--force`` replaces is still set aside (the new run has no checkpoint yet)."""
    return bool(_REPLACING)


def replacing(run: Path) -> bool:
    """Whether the run folder ``run`` (or the --compare folder holding it) is one a ``--force`` is replacing and the
    new run has no checkpoint yet: a Ctrl+C then puts the old run back instead of saving the new one."""
    real = Path(os.path.realpath(run))
    return any(Path(k) == real or Path(k) in real.parents for k in _REPLACING)


def _movable(child: Path, held: Path) -> bool:
    return child != held and not child.name.startswith(REPLACED_PREFIX) and not kept_by_force(child)


def _subrun_keeps(child: Path) -> bool:
    """A --compare's sub-run folder holding a camera path: its other files move, the folder and the path stay."""
    return (child.name in COMPARE_PARAMS and child.is_dir() and not child.is_symlink()
            and any(kept_by_force(c) for c in _contents(child)))


def set_aside(path: Path) -> Path:
    """Move the run in ``path`` (all but the camera paths saved in it and the reader lock) into a hidden folder
    inside it, for ``--force``: the old run stays whole until the new one has a checkpoint (emptying the folder at
    once lost a finished run to a Ctrl+C a second later). The folder's mark says "moving" until every file is in,
    then "held" (:func:`settle_locked` reads it after a kill -9); a move that fails puts all back."""
    held = Path(tempfile.mkdtemp(prefix=REPLACED_PREFIX, dir=path))
    try:
        (held / REPLACED_MARK).write_text("moving\n")  # (a full disk fails it: the folder goes, as after a move)
        for child in _contents(path):
            if not _movable(child, held):
                continue
            if _subrun_keeps(child):
                (held / child.name).mkdir()
                for inner in _contents(child):
                    if not kept_by_force(inner):
                        inner.rename(held / child.name / inner.name)
            else:
                child.rename(held / child.name)
        _mark(held, "held")
    except BaseException as e:
        _put_back(path, held, new_files=False)
        if isinstance(e, OSError) and e.filename is None:  # a full disk says no file: the run folder is the place
            e.filename = str(path)
        raise
    _REPLACING[os.path.realpath(path)] = held
    return held


def _mark(held: Path, state: str) -> None:
    tmp = held / f"{REPLACED_MARK}.tmp"
    tmp.write_text(state + "\n")
    os.replace(tmp, held / REPLACED_MARK)


def _clear(folder: Path, held: Path) -> None:
    """Delete what the new run wrote in ``folder`` (and in its --compare sub-runs kept for their camera paths)."""
    for child in _contents(folder):
        if not _movable(child, held):
            continue
        if child.name in COMPARE_PARAMS and (held / child.name).is_dir() and child.is_dir():
            _clear(child, held)  # the sub-run folder stays, with its camera paths
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _put_back(path: Path, held: Path, new_files: bool = True) -> None:
    """Undo :func:`set_aside`: the new run's files go (``new_files``; none were written while "moving"), the old
    run's come back, and the hidden folder goes. Marked "returning" in between, so that a kill -9 here is finished
    by the next command without deleting the old files already back."""
    with contextlib.suppress(OSError):
        if new_files:
            _clear(path, held)
        try:
            _mark(held, "returning")
        except OSError:  # a full disk: "moving" (or a mark left empty) is settled as "returning" is, "held" not
            if new_files:
                raise
        for child in held.iterdir():
            if child.name.startswith(REPLACED_MARK):
                continue
            target = path / child.name
            if child.is_dir() and target.is_dir() and child.name in COMPARE_PARAMS:
                for inner in child.iterdir():  # a sub-run kept for its camera paths: its files go back in
                    if not (target / inner.name).exists():
                        inner.rename(target / inner.name)
            elif not (target.exists() or target.is_symlink()):
                child.rename(target)
        _drop(held)


def _drop(held: Path) -> None:
    """Delete a hidden folder of a replaced run: renamed first, so that a kill -9 in the middle leaves a name the
    next command deletes (its mark may be gone by then)."""
    done = held.with_name(held.name + DROPPED_SUFFIX) if not held.name.endswith(DROPPED_SUFFIX) else held
    with contextlib.suppress(OSError):
        if done != held:
            held.rename(done)
        shutil.rmtree(done)


def _finish_replacing(run: Path) -> None:
    """The new run in (or under, for a --compare's sub-run) a folder being replaced saved its first checkpoint: the
    old run, set aside, goes."""
    real = Path(os.path.realpath(run))
    for key in [k for k in _REPLACING if Path(k) == real or Path(k) in real.parents]:
        _drop(_REPLACING.pop(key))


def settle_locked(path: Path) -> None:
    """A ``--force`` killed (-9) while replacing ``path`` left the old run set aside: put it back unless the new
    run saved a checkpoint (in the folder, or in a --compare's sub-run), else let it go. Only folders this module
    made (named so and marked) are touched: a user's own hidden folder of a like name is left alone. Called by the
    fit that holds the folder (``rundir.prepare_run_dir``; also where there are no locks), else under a brief lock
    (:func:`settle_replaced`)."""
    ours = {os.path.realpath(h) for h in _REPLACING.values()}  # (mkdtemp's paths are absolute from Python 3.12)
    for held in path.glob(f"{REPLACED_PREFIX}*"):
        if (not _REPLACED_NAME.match(held.name) or not held.is_dir() or held.is_symlink()
                or os.path.realpath(held) in ours):
            continue
        if held.name.endswith(DROPPED_SUFFIX):
            _drop(held)
            continue
        try:
            state = (held / REPLACED_MARK).read_text().strip()
        except OSError:
            continue
        if state == "held":
            new = [path / CHECKPOINT] + [path / p / CHECKPOINT for p in COMPARE_PARAMS]
            if any(c.is_file() for c in new):
                _drop(held)
            else:
                _put_back(path, held)
        elif state in ("moving", "returning", ""):  # nothing of a new run yet, or its files deleted already (an
            # empty mark: its write failed, a full disk)
            _put_back(path, held, new_files=False)


def settle_replaced(path: str | os.PathLike) -> None:
    """Before a command reads the run ``path``: finish what a killed ``--force`` left there (the old run set aside,
    which ``rwf eval`` or ``--resume`` would otherwise not see, or see mixed with the new run's config.json), unless
    a fit holds the folder (it is replacing it now)."""
    path = Path(path)
    if path.name in COMPARE_PARAMS and path.parent != path:  # a --compare's sub-run: its root is what was replaced
        settle_replaced(path.parent)
    if os.name != "posix" or not path.is_dir() or not any(path.glob(f"{REPLACED_PREFIX}*")):
        return
    if os.path.realpath(path) in _REPLACING:  # this command is replacing it now (rwf fit --force --view)
        return
    if os.path.realpath(path) in _LOCKS:
        settle_locked(path)
        return
    import fcntl  # noqa: PLC0415

    try:
        fd = flock(path, fcntl.LOCK_EX)
    except BlockingIOError:
        return
    if fd is None:
        return
    try:
        settle_locked(path)
    finally:
        os.close(fd)
