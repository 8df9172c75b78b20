"""The run directory: the contract every pipeline, the viewer and the checks rely on.

    RUN/config.json      everything needed to rebuild the model (plain JSON)
    RUN/metrics.json     final numbers (psnr, psnr_train, ssim, steps, seconds, param, ...)
    RUN/history.csv      one row per evaluation: step, seconds, loss, psnr, ...
    RUN/checkpoint.pt    model, optimizer, scheduler and RNG state; loads with ``torch.load(weights_only=True)``

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a kill at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import UserError
from .locks import flock

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
FIGURES = ("curve.png", "preview.png", "reconstruction.png", "error.png", "mesh.ply")
"""the files a fit writes at its end besides metrics.json (a folder of that name failed the fit after training)"""
VAL_RENDERS = "val"
"""the folder of a NeRF fit's periodic validation renders"""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _publish(tmp: str, path: Path) -> None:
    """Give ``tmp`` the permissions a plain ``open()`` would have (mkstemp makes it 0600), then move it to ``path``;
    not after a Ctrl+C or SIGTERM, even one a library swallowed (:func:`signals.stop_if_interrupted`)."""
    from .signals import stop_if_interrupted  # noqa: PLC0415

    stop_if_interrupted()
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def refuse_dangling_link(path: str | os.PathLike) -> None:
    """UserError naming the link (and where it points) when ``path`` or a folder above it, up to the first that
    exists, is a symbolic link to nothing: making ``path`` there would fail late and say only "File exists"."""
    for link in (Path(path), *Path(path).parents):
        if link.is_symlink() and not link.exists():
            where = "" if link == Path(path) else f" ({link} is on the way)"
            raise UserError(f"{path}: {link} is a link to {os.readlink(link)}, which does not exist{where}")
        if link.exists():
            return


def _naming(e: OSError, tmp: str, path: Path) -> OSError:
    """``e`` as an OSError naming ``path``, the output, where it names the temporary file written first (or none):
    the user never typed the hidden name."""
    temporary = e.filename is not None and (os.fsdecode(e.filename) == tmp
                                            or Path(os.fsdecode(e.filename)).name.startswith(temp_prefix(path.name)))
    if e.errno is not None and (e.filename is None or temporary or e.filename2 is not None):
        return OSError(e.errno, e.strerror, str(path))
    return e


def temp_prefix(name: str) -> str:
    """``.NAME.``, the start of a temporary file's name beside NAME: NAME cut to 200 bytes, so that with
    mkstemp's 8 random characters and the suffixes it stays under the 255 bytes a file name may have."""
    cut = name.encode()[:200].decode(errors="ignore")
    return f".{cut}."


def _hold(fd: int) -> None:
    """Lock the temporary file open on ``fd`` for as long as it is open: :func:`sweep_temporaries` leaves it alone."""
    try:
        import fcntl  # noqa: PLC0415
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # no locks here (a sweep then leaves every temporary alone; on a system
        pass                         # without fcntl at all it goes by age alone)


_OWN_TAIL = re.compile(r"[a-z0-9_]{8}\.tmp(\.[^.]*)?")
"""what follows ``temp_prefix(NAME)`` in the name of a temporary of NAME"""

_FOUND: dict[str, list[str]] = {}
"""per folder, the names of the temporaries this process found there when it first wrote into it (listed once: a
render writes thousands of frames)"""


def sweep_temporaries(folder: Path, name: str | None = None, min_age: float | None = None,
                      fresh: bool = False) -> None:
    """Remove the temporary files (``.NAME.XXXXXXXX.tmp``, ``atomic_write``'s and ``atomic_path``'s) a killed
    writer left in ``folder``: those of the file ``name`` (every one with ``name`` None, as ``--resume`` does in its
    own run folder), untouched for ``min_age`` seconds (default ``locks.STALE_AFTER_S``) and locked by no process (a
    live writer holds its file's lock, :func:`_hold`; where the file system has no locks, none is removed). Only
    the file's own temporaries: a hidden ``.x.XXXXXXXX.tmp`` of another program beside an output stays. The folder
    is listed once per process (``fresh``: again)."""
    import time  # noqa: PLC0415

    from .locks import STALE_AFTER_S  # noqa: PLC0415

    key = os.path.abspath(folder)
    if fresh or key not in _FOUND:
        try:
            _FOUND[key] = [e.name for e in os.scandir(folder) if _TEMPORARY.match(e.name)]
        except OSError:
            _FOUND[key] = []
    min_age = STALE_AFTER_S if min_age is None else min_age
    prefix = None if name is None else temp_prefix(name)
    for child in list(_FOUND[key]):
        if prefix is not None and not (child.startswith(prefix) and _OWN_TAIL.fullmatch(child[len(prefix):])):
            continue
        target = os.path.join(key, child)
        try:
            st = os.lstat(target)
        except OSError:
            _FOUND[key].remove(child)
            continue
        if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < min_age:
            continue
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError:
            continue
        try:
            import fcntl  # noqa: PLC0415
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:  # its writer still runs
            os.close(fd)
            continue
        try:
            os.unlink(target)
            _FOUND[key].remove(child)
        except OSError:
            pass
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it over ``path`` in one step (the stale
    temporaries of ``path`` a killed writer left go first: :func:`sweep_temporaries`)."""
    path = Path(path)
    tmp = ""
    try:
        sweep_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        _hold(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            _publish(tmp, path)  # still open, so still locked: a sweep cannot take it before it is in place
    except BaseException as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error_behind(e) if isinstance(e, Exception) else None
        if cause is not None:
            named = _naming(cause, tmp, path)
            if named is not cause:
                raise named from e
        raise


def _os_error_behind(e: BaseException) -> OSError | None:
    """``e`` if an OSError, or the OSError it was raised while handling: torch.save's zip writer turns a full disk
    into ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, the OSError left as its context."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` for a writer that wants a file name; moved over ``path`` on success."""
    path = Path(path)
    sweep_temporaries(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp" + path.suffix[:40], dir=path.parent)
    except OSError as e:
        raise _naming(e, "", path) from None
    _hold(fd)  # held open (locked) until published or removed; the writer opens the path itself
    try:
        yield tmp
        _publish(tmp, path)
    except OSError as e:
        named = _naming(e, tmp, path)
        if named is e:
            raise
        raise named from e
    finally:
        try:
            if os.path.exists(tmp):
                os.unlink(tmp)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj):
    """``obj`` with NaN and infinite floats as None (null): JSON has no such numbers, and strict readers reject
    the ``NaN`` Python writes (SSIM is NaN on lattices under 3 pixels, PSNR infinite on an exact fit)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically; NaN and infinite floats become null (see :func:`json_safe`)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM, as Windows tools write it, is allowed
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply to read)") from None


RUN_KINDS = ("image", "sdf", "nerf")
"""the ``kind`` a run's config.json names"""
COMPARE_FILES = ("compare.json", "compare.md", "compare.png")
"""what a ``--compare`` writes beside its sub-runs"""

KEPT_BY_FORCE = ("camera_path.json",)
"""the user's own work inside a run, which ``--force`` keeps: the camera path recorded in the viewer, in the scene's
coordinates, still applies to a refit of the same data (and so does any camera path saved under another name:
:func:`kept_by_force`)"""

READ_LOCK = ".rwf-readers"
"""an empty file a fit makes in its run folder, never replaced (a lock is held on a file, not on its name: locks on
config.json were lost when --resume rewrote it) and kept by --force: renders, evals and exports hold a shared lock
on it, --force an exclusive one"""

RUN_FILES = (CONFIG, CHECKPOINT, METRICS, HISTORY, READ_LOCK)
"""the files that make a folder a run: a render or an export never writes over them, even with --force"""

CAMERA_PATH_MAX_BYTES = 64 << 20
"""a file larger than this is not read to see whether it is a camera path (a checkpoint is not one)"""


def holds_camera_path(path: Path) -> bool:
    """Whether the file ``path`` holds a camera path (a JSON object with ``camera_path`` or ``keyframes``). Only a
    file whose first 64 kB name one of those keys is read whole: ``--force`` asks this of every file of a run."""
    try:
        if path.stat().st_size > CAMERA_PATH_MAX_BYTES:
            return False
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") or not (
                b'"keyframes"' in head or b'"camera_path"' in head):
            return False
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and ("camera_path" in obj or "keyframes" in obj)


def kept_by_force(child: Path) -> bool:
    """Whether ``--force`` keeps the file ``child`` of a run: a camera path the viewer saved there, under any name
    (the viewer saves a relative name inside the run; only camera_path.json was kept, the others deleted)."""
    if not child.is_file() or child.is_symlink():
        return False
    if child.name in KEPT_BY_FORCE:
        return True
    return child.name not in RUN_FILES and holds_camera_path(child)


def _is_single_run(path: Path) -> bool:
    """Whether ``path`` holds a run of this toolkit: a config.json naming one of its kinds of run (another tool's
    config.json, or a file that is not JSON, is not a run)."""
    config = path / CONFIG
    if not config.is_file() or config.is_symlink():
        return False
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("kind") in RUN_KINDS


def is_run_dir(path: Path) -> bool:
    """Whether ``--force`` may empty ``path``: it holds a run (its own config.json), or a ``--compare`` of runs,
    that is sub-run folders named plain, wn or rwf (each a run, or empty as a --compare interrupted before its
    first config.json leaves it) and nothing else but the comparison's own files. A folder that only holds runs
    among other things (a folder of runs, a project with notes) is not one: ``--out runs --force``, a slip for
    ``runs/x``, must not delete every run in it."""
    from .replacing import REPLACED_MARK, REPLACED_PREFIX  # noqa: PLC0415  (it imports this module)

    if _is_single_run(path):
        return True
    subruns = 0
    for child in _contents(path):
        if child.name in COMPARE_PARAMS and child.is_dir() and not child.is_symlink():
            if not (_is_single_run(child) or all(kept_by_force(c) or _is_temporary(c) for c in _contents(child))):
                return False
            subruns += 1
        elif not ((child.is_file() and not child.is_symlink()
                   and (child.name in COMPARE_FILES or _TEMPORARY.match(child.name) or kept_by_force(child)))
                  or (child.name.startswith(REPLACED_PREFIX) and (child / REPLACED_MARK).is_file())):
            return False
    return subruns > 0


def check_out_holds_no_input(out: Path, inputs) -> None:
    """Refuse a run folder that is, or holds, the folder of an input (``--force`` would delete it)."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        path = Path(given).resolve()
        folder = path if path.is_dir() else path.parent
        if target == folder or target in folder.parents:
            raise UserError(f"{out}: holds the input {given}; choose another --out")


def refuse_source_as_output(out: Path, source: str | None) -> None:
    """UserError when ``out`` is the run's source file (``rwf render --out``, ``rwf export mesh --out``): writing
    there would destroy the data the run was fitted to, which ``rwf eval`` and ``--resume`` read again."""
    if source is None:
        return
    out, source = Path(out), Path(source)
    same = out.resolve() == source.resolve()
    with contextlib.suppress(OSError):  # a hard link, or another path to the same file
        same = same or (out.exists() and source.exists() and os.path.samefile(out, source))
    if same:
        raise UserError(f"{out}: is the run's source {source}; writing there would replace it (choose another --out)")


def refuse_among_inputs(out: Path, data, inputs_are: str = "dataset") -> None:
    """UserError when ``out`` (``rwf render --out`` of a NeRF run: a folder of frames; ``rwf export mesh --out``: a
    file) is a file of the run's dataset ``data`` (an image, a transforms file, its source mesh) or a folder holding
    one: frames written among the training photos, or a mesh over the scene's own mesh.ply, change the data the run
    was fitted to, which ``rwf eval`` and ``--resume`` read again. Another file or folder inside the dataset is
    allowed."""
    from .datasets import dataset_inputs  # noqa: PLC0415

    if not isinstance(data, (str, os.PathLike)):
        return  # config.json without a dataset: said where the cameras are read
    inputs = dataset_inputs(data)
    target = Path(out).resolve()
    if target in inputs:
        raise UserError(f"{out}: is a file of the run's {inputs_are} {data}; writing there would replace it "
                        "(choose another --out)")
    held = sorted(p for p in inputs if p.parent == target)
    if held:
        raise UserError(f"{out}: holds files of the run's {inputs_are} {data} ({held[0].name}, ...); the frames "
                        "would go among them (choose another --out)")


_LOCKS: dict[str, int] = {}
"""run folders this process holds (real path -> open descriptor with an exclusive flock)"""

_PREPARED: set[str] = set()
"""run folders this command made or reopened (:func:`prepare_run_dir`), so an interrupt can say whether a fit
left anything to resume"""

_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")
"""the names ``atomic_write`` and ``atomic_path`` give their temporary files"""


def _is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of this toolkit's (:data:`_TEMPORARY`), no file of the user's."""
    return bool(_TEMPORARY.match(path.name)) and path.is_file()


_READING: list[int] = []
"""descriptors of the runs' reader-lock files this command locks: shared by a reader (:func:`hold_run`), exclusive
by ``--force`` before it empties a run (:func:`_refuse_if_read`)"""


def hold_run(run: Path) -> None:
    """Mark the run ``run`` as read by this command (render, eval, export, view) until it ends: a shared lock on its
    :data:`READ_LOCK` file (config.json for a run fitted before it existed), which ``rwf fit --force`` checks before
    it empties the folder (it would delete the checkpoint and the frames being written under the reader). A fit
    running in the folder does not conflict (it locks the folder, see ``_lock_run_dir``): rendering a checkpoint
    while training goes on stays possible, and so does --resume."""
    if os.name != "posix":
        return
    import fcntl  # noqa: PLC0415
    for target in (run / READ_LOCK, run / CONFIG):  # config.json: a run fitted before the reader lock existed
        if not target.is_file():
            continue
        try:
            fd = flock(target, fcntl.LOCK_SH)
        except BlockingIOError:
            raise UserError(f"{run}: an 'rwf fit --force' is replacing this run; wait for it to end") from None
        if fd is not None:
            _READING.append(fd)
        return


def _refuse_if_read(path: Path) -> list[int]:
    """Before ``--force`` empties ``path``: UserError when a render, eval, export or view of its run (or of a
    --compare's sub-run) is going on (:func:`hold_run`); else the exclusive locks taken on their reader-lock and
    config.json files, which keep a reader from starting until they are closed (once the run is emptied)."""
    if os.name != "posix":
        return []
    import fcntl  # noqa: PLC0415
    held = []
    for run in [path] + [path / p for p in COMPARE_PARAMS]:
        for target in (run / READ_LOCK, run / CONFIG):
            if not target.is_file() or target.is_symlink():
                continue
            try:
                fd = flock(target, fcntl.LOCK_EX)
            except BlockingIOError:
                for fd in held:
                    os.close(fd)
                raise UserError(f"{run}: an rwf render, eval, export or view of this run is going on; --force "
                                "would delete the files it reads and writes (wait for it to end, or choose another "
                                "--out)") from None
            if fd is not None:
                held.append(fd)
    return held


def _lock_run_dir(path: Path) -> bool:
    """Hold an exclusive lock on the folder ``path`` until :func:`release_run_dirs` (the end of the command) or the
    process's end, a kill -9 included; UserError when another process holds it (two fits into one --out would mix
    their files). Returns whether the lock is held (False where the system has no such locks)."""
    if os.name != "posix":  # Windows: no advisory locks, concurrent fits go undetected
        return False
    import fcntl  # noqa: PLC0415

    key = os.path.realpath(path)
    if key in _LOCKS:
        return True
    try:
        fd = flock(path, fcntl.LOCK_EX)
    except BlockingIOError:
        raise UserError(f"{path}: another rwf process is writing this run directory (wait for it to end, or "
                        f"choose another --out)") from None
    if fd is None:  # a file system without locks (some network mounts)
        return False
    _LOCKS[key] = fd
    return True


def release_run_dirs() -> None:
    """Release the run folders this process locked (``cli.dispatch`` calls it when a command ends), after putting
    back a run that ``--force`` was replacing when the new one has no checkpoint yet (an error, or a Ctrl+C)."""
    replacing = sys.modules.get(f"{__package__}.replacing")
    if replacing is not None:  # imported: a --force set a run aside
        replacing.put_back_all()
    _PREPARED.clear()
    while _LOCKS:
        os.close(_LOCKS.popitem()[1])
    while _READING:
        os.close(_READING.pop())


def run_dirs_prepared() -> bool:
    """Whether this command has made or reopened a run folder yet (:func:`prepare_run_dir`)."""
    return bool(_PREPARED)


def run_dirs_resumable() -> bool:
    """Whether a run folder this command prepared holds its ``config.json`` yet (what ``--resume`` reads)."""
    return any((Path(p) / CONFIG).is_file() for p in _PREPARED)


def _remove_temporaries(path: Path) -> None:
    """Remove the temporary files a killed writer left in ``path`` (kill -9 during a checkpoint leaves one each), at
    any age: the fit holds the run, but an ``rwf eval`` writing its metrics.json keeps its own (locked); and in its
    validation renders' folder (a kill during a NeRF's val/step_N.png left one that no later write swept: the
    resumed fit writes step N once)."""
    sweep_temporaries(path, min_age=0.0, fresh=True)
    if (path / VAL_RENDERS).is_dir() and not (path / VAL_RENDERS).is_symlink():
        sweep_temporaries(path / VAL_RENDERS, min_age=0.0, fresh=True)


def prepare_run_dir(path: str | os.PathLike, force: bool = False, resume: bool = False) -> Path:
    """Create (or reopen, with ``resume``) a run directory, locked for this process (see ``_lock_run_dir``).

    An existing non-empty folder is never overwritten unless ``force`` is given, and then only when it holds a run
    (a folder with files but no ``config.json`` may be the user's data), whose files go except the camera paths
    saved in it (:func:`kept_by_force`): set aside in a hidden folder until the new run's first checkpoint, and put
    back should the command end before it (:func:`release_run_dirs`);
    ``resume`` requires a ``config.json``.
    Call this only after all inputs were validated, so bad input never leaves a folder behind.
    """
    from . import replacing  # noqa: PLC0415  (it imports this module)

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory")
    refuse_dangling_link(path)
    if resume:
        if path.is_dir():
            held = _lock_run_dir(path)  # (or no locks here: Windows, some network mounts; a fit settles either way)
            replacing.settle_locked(path)
            if held:  # before looking for config.json: a kill while it was first written left its temporary
                _remove_temporaries(path)
        if not (path / CONFIG).is_file():
            raise UserError(f"{path}: nothing to resume ({no_config_yet(path, CONFIG)})")
        check_run_files(path)
        check_writable(path)
        _make_read_lock(path)
        _PREPARED.add(str(path))
        return path
    _refuse_inside_a_run(path)
    created = [d for d in (path, *path.parents) if not d.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        for d in created:  # the folders made on the way (bad input leaves nothing behind)
            with contextlib.suppress(OSError):
                d.rmdir()
        raise UserError(f"{path}: cannot create the run directory ({e.strerror or e})") from None
    check_writable(path)
    held = _lock_run_dir(path)  # before looking inside: a fit starting at the same moment sees this one's files
    replacing.settle_locked(path)  # what a killed --force left (readers settle only under a lock: replacing.py)
    if held:  # a killed writer's temporary (the first config.json's) is no file of the user's
        _remove_temporaries(path)
    if _refuse_taken(path, force):
        emptying = _refuse_if_read(path)
        try:  # the folder itself stays: it carries the lock, as the reader lock does
            replacing.set_aside(path)
        finally:  # emptied: readers may come, as to any fit in progress (a render reads its last checkpoint)
            for fd in emptying:
                os.close(fd)
    _make_read_lock(path)
    _PREPARED.add(str(path))
    return path


def _refuse_inside_a_run(path: Path) -> None:
    """UserError for a new run inside another run's folder: that run's --force would delete it."""
    above = run_above(path)
    if above is not None:
        raise UserError(f"{path}: lies inside the run {above}, whose --force would delete it; choose an --out "
                        "outside it")


def _refuse_taken(path: Path, force: bool) -> bool:
    """Whether the folder ``path`` holds a run that a new fit there replaces (``force``); UserError when it holds
    files but no run, or a run and no ``force``. Camera paths alone: a run may go there."""
    if any(not (kept_by_force(child) or _is_temporary(child))
           for child in _contents(path)):  # (this toolkit's temporaries: a killed writer's, swept under the lock)
        if _no_run_yet(path):  # a --compare stopped before its first config.json: nothing of it to keep
            return False
        if not is_run_dir(path):  # said first: --force and --resume were suggested for a dataset folder, both refused
            raise UserError(f"{path}: holds files but is not a run (no {CONFIG} of this toolkit) nor a --compare "
                            f"of runs; --force replaces only those (choose another --out)")
        if not force:
            raise UserError(f"{path}: run directory exists; pass --force to overwrite or --resume to continue")
        inner = _runs_inside(path)
        if inner:
            raise UserError(f"{path}: holds another run, {inner[0]}{f' (and {len(inner) - 1} more)' * (len(inner) > 1)}"
                            ", which --force would delete with it; move it out first (or choose another --out)")
        return True
    return False


def no_config_yet(path: Path, config: str | os.PathLike) -> str:
    """Why ``--resume`` finds no ``config`` (a path inside ``path``): "no config.json", and when ``path`` holds
    only what a fit stopped before writing it leaves, that it is to be run again without --resume."""
    early = path.is_dir() and (all(_is_temporary(c) for c in _contents(path))
                               or _no_run_yet(path))
    return f"no {config}" + ("; the fit stopped before writing one: run it again without --resume" if early else "")


def _no_run_yet(path: Path) -> bool:
    """Whether ``path`` holds only empty --compare sub-run folders (and a killed writer's temporaries): what a
    --compare stopped before its first config.json leaves, which a new fit there may take without --force."""
    if not path.is_dir():
        return False
    subs = [c for c in _contents(path) if not _is_temporary(c)]
    return bool(subs) and all(c.name in COMPARE_PARAMS and c.is_dir() and not c.is_symlink()
                              and all(_is_temporary(x) for x in _contents(c)) for c in subs)


def _runs_inside(path: Path) -> list[Path]:
    """The runs inside the run folder ``path`` (a --compare's own sub-runs aside): a run made in a run's folder
    was deleted with it by that run's --force. Hidden folders (a --force's set-aside run, temporaries) aside."""
    compare_root = not _is_single_run(path)
    found = []
    for root, dirs, _ in os.walk(path):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        own = here == path or (compare_root and here.parent == path and here.name in COMPARE_PARAMS)
        if not own and _is_single_run(here):
            found.append(here)
            dirs[:] = []
    return found


def run_above(path: str | os.PathLike) -> Path | None:
    """The run folder that ``path`` lies inside, if any (a --compare's sub-runs lie in a folder that is no run)."""
    for parent in Path(path).resolve().parents:
        if _is_single_run(parent):
            return parent
    return None


def refuse_taken_out(path: str | os.PathLike, force: bool) -> None:
    """The refusals :func:`prepare_run_dir` makes for a new fit into ``path``, said before any input is read (a
    NeRF dataset took minutes to load before "run directory exists"); prepare_run_dir asks again under the lock."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory")
    _refuse_inside_a_run(path)
    try:
        if path.is_dir():
            _refuse_taken(path, force)
    except OSError:  # unreadable: prepare_run_dir says so where it opens the folder
        pass


def _make_read_lock(path: Path) -> None:
    """The run's :data:`READ_LOCK` file, made once (an old run gets it at its first --resume)."""
    if not (path / READ_LOCK).exists():
        with contextlib.suppress(OSError):
            os.close(os.open(path / READ_LOCK, os.O_WRONLY | os.O_CREAT, 0o666))


def _contents(path: Path) -> list[Path]:
    """What ``path`` holds besides the reader-lock file."""
    return [child for child in path.iterdir() if child.name != READ_LOCK]


def check_output_folder(out: Path) -> None:
    """UserError before any work when the file ``out`` cannot be written where it is named: its folder is a file
    (or lies under one), does not exist, or cannot take files (a read-only folder or file system)."""
    out = Path(out)
    for above in out.parents:
        if above.exists():
            if not above.is_dir():
                raise UserError(f"{out}: {above} is a file, not a folder")
            break
    if not out.parent.is_dir():
        raise UserError(f"{out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"{out}: cannot write there (folder {out.parent} is not writable)")


def check_output_file(out: Path, force: bool) -> None:
    """UserError before any work when a render or an export must not write the file ``out``: one of the
    :data:`RUN_FILES` of a run (any run: --out runs/other/config.json broke that run for good), or, without
    ``force``, any existing file (``rwf render`` and ``rwf export mesh`` replaced one silently; ``rwf export
    cameras`` refused)."""
    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    refuse_dangling_link(out)  # "exists" of a link to nowhere would mislead; --force replaced the link
    if out.name in RUN_FILES and _is_single_run(out.parent):
        raise UserError(f"{out}: is a file of the run {out.parent}; --out names a new file")
    if not force:
        raise UserError(f"{out}: exists; --force replaces it")


def check_writable(path: Path) -> None:
    """UserError before any work when the run folder cannot take files (a read-only file system, even for root;
    --resume trained, then failed at its first write)."""
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write the run's files there (folder not writable)")


def load_run_config(run: str | os.PathLike) -> dict:
    """Read ``RUN/config.json`` with a clear error when RUN is not a run directory (after settling what a killed
    ``--force`` left there: :func:`settle_replaced`)."""
    from .replacing import settle_replaced  # noqa: PLC0415

    run = Path(run)
    settle_replaced(run)
    if not run.is_dir():
        raise UserError(f"{run}: " + ("a file, not a run directory (give the folder a fit wrote)" if run.exists()
                                      else "no such run directory"))
    if not (run / CONFIG).is_file():
        subruns = [run / p for p in COMPARE_PARAMS if (run / p / CONFIG).is_file()]
        if subruns and is_run_dir(run):
            raise UserError(f"{run}: a --compare of runs, not one run; give one of them: "
                            + ", ".join(map(str, subruns)))
        raise UserError(f"{run}: not a run directory (no {CONFIG})")
    check_run_files(run)
    cfg = read_json(run / CONFIG)
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise UserError(f"{run / CONFIG}: missing the 'kind' of run")
    return cfg


def check_run_files(run: Path) -> None:
    """UserError when one of the run's own file names holds something else (a folder): a checkpoint there would
    read as none, and a fit or an eval would fail only when it writes, after its work."""
    for name in (CONFIG, CHECKPOINT, METRICS, HISTORY, *FIGURES):
        if (run / name).exists() and not (run / name).is_file():
            raise UserError(f"{run / name}: not a file (the run keeps its {name} there)")
    if (run / VAL_RENDERS).exists() and not (run / VAL_RENDERS).is_dir():
        raise UserError(f"{run / VAL_RENDERS}: not a folder (a NeRF run keeps its validation renders there)")


def refuse_lost_checkpoint(run: Path, ckpt_every: int) -> None:
    """For ``--resume`` of a run without a checkpoint file: UserError when the run shows that it had one (a link
    to nothing, a finished fit's metrics.json, or history.csv past the first checkpoint step), since resuming
    would silently start the fit over at step 0 and replace its history."""
    path = run / CHECKPOINT
    if path.exists():
        return  # something else than a file: check_run_files names it
    if path.is_symlink():
        why = f"a link to {os.readlink(path)}, which does not exist"
    elif (run / METRICS).is_file():
        why = f"missing, though the fit finished ({METRICS})"
    else:
        try:
            steps = [row.get("step", 0) for row in read_history(run / HISTORY)] if (run / HISTORY).is_file() else []
            done = int(max((s for s in steps if math.isfinite(s)), default=0))
        except (OSError, ValueError, csv.Error):
            done = 0
        if done <= ckpt_every:  # killed before its first checkpoint or while writing it (the row of a checkpoint
            return  # step is written first): nothing was lost
        why = f"missing, though {HISTORY} records step {done} (a checkpoint is written every {ckpt_every} steps)"
    raise UserError(f"{path}: {why}; --resume would start the fit over at step 0 (if the checkpoint was moved, put "
                    "it back; else, as after a fit that stopped before writing it, refit with --force)")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save a dict of tensors, numbers, strings and nested dicts/lists (no arbitrary objects) atomically."""
    atomic_write(path, lambda f: torch.save(state, f))
    replacing = sys.modules.get(f"{__package__}.replacing")
    if replacing is not None:
        replacing.checkpoint_saved(Path(path))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing pickled code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: " + ("not a file" if path.exists() else "checkpoint not found"))
    import pickle  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    try:
        with warnings.catch_warnings():  # torch's own notes on old pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's safe loader stopped (its message advises weights_only=False)
        text = str(e)
        if "unsupported global" in text.lower():  # Python objects: code would run to rebuild them; never loaded
            raise UserError(f"{path}: not a checkpoint of this toolkit (it holds Python objects, which are not "
                            "loaded: loading them could run code)") from None
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        why = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith(advice)
                    and not line.strip().startswith("WeightsUnpickler error")), type(e).__name__)
        raise UserError(f"{path}: cannot load checkpoint (not a file torch.save wrote, or a damaged one: the safe "
                        f"loader stopped at '{why[:120]}')") from None
    except Exception as e:  # corrupt file, or one holding objects beyond plain tensors and containers
        raise UserError(f"{path}: cannot load checkpoint, a damaged or truncated file? ({one_line(e)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict of states)")
    return state


def checkpoint_mismatch(path: str | os.PathLike, e: Exception) -> UserError:
    """The one-line error for a checkpoint that does not fit the model its run's config.json builds."""
    return UserError(f"{path}: does not match this run's {CONFIG} ({one_line(e, 200)})")


def one_line(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (torch's load and state-dict errors span several), at most ``limit`` long."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_run_model(run: str | os.PathLike, model: torch.nn.Module) -> dict:
    """Load ``RUN/checkpoint.pt``'s weights into ``model`` (built from RUN's config.json); returns the checkpoint."""
    path = Path(run) / CHECKPOINT
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:  # another run's checkpoint, config.json edited
        raise checkpoint_mismatch(path, e) from None
    step = state.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise checkpoint_mismatch(path, ValueError(f"step {step!r} is not a count of steps"))
    check_finite_weights(model, path)
    return state


def check_finite_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """UserError when ``model``, loaded from the checkpoint ``path``, has a weight that is NaN or infinite, or a
    buffer (a Fourier matrix, an occupancy density) that is NaN: its renders and metrics would be NaN (written as
    black images and null figures). A buffer may hold infinity: a density grid's running max of exp(x)."""
    if not (all(bool(torch.isfinite(p).all()) for p in model.parameters())
            and not any(bool(torch.isnan(b).any()) for b in model.buffers() if b.is_floating_point())):
        raise UserError(f"{path}: the weights are not all finite numbers (a damaged file, or a fit that diverged)")


def write_history(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows (dicts) as CSV; the columns are the union of the keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_history(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]


COMPARE_PARAMS = ("plain", "wn", "rwf")
"""the parameterizations ``--compare`` trains, in this order, each a run of its own under the output folder"""
