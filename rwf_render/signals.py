"""Signals: SIGTERM handled like Ctrl+C, and a fit that stops at a step boundary when either arrives."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


def terminate_like_interrupt() -> None:
    """SIGTERM (``kill``, a job scheduler's stop) unwinds like Ctrl+C, so staging folders and temporary files are
    cleaned up; without this, Python dies on the spot and leaves them behind."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


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
        where = " and saving a checkpoint" if self.trainer.run_dir is not None else ""
        print(f"\nrwf: stopping after this step{where} (again to stop at once)", file=sys.stderr)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
