"""The kernel build's lock: a build killed half-way (kill -9) left torch's lock file in the cache folder, and every
later NeRF fit, render or eval waited for it forever (a kill/resume hunt). A builder now holds an flock, which goes
with its process however it ends; whoever holds it removes torch's stale file, and a second builder waits for the
first and uses its build. The compiler is stubbed: these tests are about the locking, not the kernel."""

import fcntl
import os
import threading
import time
import types

import pytest

from rwf_render.raymarch import _backend


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RWF_CACHE", str(tmp_path))
    monkeypatch.setattr(_backend, "_cannot_build", lambda kind: None)
    _backend._reset()
    yield _backend.build_dir("cpu")
    _backend._reset()


def test_a_stale_torch_lock_left_by_a_killed_build_is_removed(cache, monkeypatch):
    from torch.utils import cpp_extension

    cache.mkdir(parents=True)
    (cache / "lock").write_text("")  # what a build killed with kill -9 leaves: torch polls it without end
    built = types.ModuleType("stub")

    def load(**kw):
        assert not (cache / "lock").exists(), "the build started with the stale lock in place"
        assert kw["build_directory"] == str(cache)
        return built

    monkeypatch.setattr(cpp_extension, "load", load)
    assert _backend.build("cpu") is built


def test_a_second_builder_waits_for_the_first_and_uses_its_build(cache, monkeypatch, capsys):
    from torch.utils import cpp_extension

    cache.mkdir(parents=True)
    done = {}
    monkeypatch.setattr(_backend, "_import_built", lambda kind: done.get("module"))
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: pytest.fail("built again while another build finished"))
    fd = os.open(cache / _backend.BUILD_LOCK, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first builder, at work

    def first_builder_finishes():
        time.sleep(0.3)
        done["module"] = types.ModuleType("built by the first")
        os.close(fd)  # its lock goes with it

    thread = threading.Thread(target=first_builder_finishes)
    thread.start()
    try:
        module = _backend.build("cpu")
    finally:
        thread.join()
    assert module is done["module"]
    assert "waiting for another process building the CPU kernel" in capsys.readouterr().err
