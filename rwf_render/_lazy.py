"""Modules imported on first use. trimesh (with scipy and networkx, about 0.5 s) is needed only by the commands that
read or write meshes, but the modules that use it are imported when ``rwf`` builds its parser: every command, ``rwf
--help`` included, paid for it. A proxy object rather than ``importlib.util.LazyLoader``: a lazy module in
``sys.modules`` is loaded by anything that inspects it (torch scans the modules there), and loading one from two
threads at once (the viewer's) is not safe on Python 3.11."""

from __future__ import annotations

import threading


class LazyModule:
    """Stands for the module ``name``: the first attribute read imports it (Ctrl+C held meanwhile on the main thread:
    an interrupt inside trimesh's import left it half-imported, failing later with an unrelated error)."""

    def __init__(self, name: str):
        self._name, self._module, self._lock = name, None, threading.Lock()

    def _load(self):
        with self._lock:
            if self._module is None:
                from .signals import import_held  # noqa: PLC0415

                self._module = import_held(self._name)
        return self._module

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):  # copy, pickle and inspect probe these: not the module's
            raise AttributeError(attr)
        return getattr(self._module or self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (loaded)'}>"


trimesh = LazyModule("trimesh")
