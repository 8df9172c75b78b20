"""Signals: SIGTERM handled like Ctrl+C, and a fit that stops at a step boundary when either arrives."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


_pending = False
"""a Ctrl+C or SIGTERM arrived during this command (set by :func:`terminate_like_interrupt`'s handler)"""


def terminate_like_interrupt() -> dict:
    """SIGTERM (``kill``, a job scheduler's stop) unwinds like Ctrl+C, so staging folders and temporary files are
    cleaned up; without this, Python dies on the spot and leaves them behind. Either signal is also remembered
    (:func:`interrupt_pending`): a library that catches every exception (trimesh's ``except BaseException``) can
    swallow the KeyboardInterrupt, and the command then ran on and exited 0; the outputs check the flag before they
    are published, and the command ends as interrupted. Called at the start of each command: clears the flag;
    returns the handlers it replaced, for :func:`restore_signals` when the command ends."""
    global _pending
    _pending = False
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum, frame):
        global _pending
        _pending = True
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore_signals(previous: dict) -> None:
    """The handlers :func:`terminate_like_interrupt` replaced, back; the flag cleared (a caller in the same process,
    a test or a library user, starts afresh)."""
    global _pending
    _pending = False
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


def interrupt_pending() -> bool:
    """Whether a Ctrl+C or SIGTERM arrived during this command (even one a library swallowed)."""
    return _pending


def stop_if_interrupted() -> None:
    """KeyboardInterrupt when a Ctrl+C or SIGTERM arrived, even one a library swallowed: called before an output is
    published, so an interrupted command writes nothing more."""
    if _pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted():
    """Run a short block that must not stop half-way (moving finished outputs into place: a frames folder, a
    dataset replacing the old one) with Ctrl+C and SIGTERM held; one that arrived meanwhile is raised as
    KeyboardInterrupt once the block is done, and one that arrived before stops it from starting."""
    stop_if_interrupted()
    with deferred_interrupts() as received:
        yield
    if received:
        global _pending
        _pending = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl+C and SIGTERM while the block runs; yields a list of the signals that arrived meanwhile.

    For module imports: an interrupt in the middle of one leaves a library half-imported, and some libraries
    (trimesh, scipy) catch it there and fail later with an unrelated error and its traceback."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def import_held(name: str):
    """``importlib.import_module(name)`` with Ctrl+C and SIGTERM held until it returns; one that came meanwhile is
    raised then, as KeyboardInterrupt. open3d turns an interrupt during its set-up into an ImportError, which was
    reported as a missing open3d ("pip install open3d-cpu"), or a traceback."""
    import importlib  # noqa: PLC0415

    with deferred_interrupts() as received:
        try:
            module = importlib.import_module(name)
        except ImportError:
            if received:
                raise KeyboardInterrupt from None
            raise
    if received:
        raise KeyboardInterrupt
    return module


class StopAtStepBoundary:
    """While a fit runs, the first Ctrl+C or SIGTERM asks the loop to stop after the current step, which then saves
    a checkpoint and raises KeyboardInterrupt; a second one interrupts at once. Main thread only (signals)."""

    def __init__(self, trainer):
        self.trainer, self.received, self.previous = trainer, False, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received, self.trainer.stop_requested = True, True
        run, replacing = self.trainer.run_dir, sys.modules.get(f"{__package__}.replacing")
        back = run is not None and replacing is not None and replacing.replacing(run)
        where = (" (before the new run's first checkpoint: the run --force replaces comes back)" if back else
                 " and saving a checkpoint" if run is not None else "")
        print(f"\nrwf: stopping after this step{where} (again to stop at once)", file=sys.stderr)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
