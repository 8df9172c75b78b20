"""Shared fixtures: the read-only real data in ../shared/data (or $RWF_DATA)."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("RWF_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set RWF_DATA)")
    return root


@pytest.fixture(autouse=True)
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; skipped unless --runslow or RWF_SLOW=1")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("RWF_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or RWF_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    """A 32 px Blender-format scene rendered by data_tools' ray caster (ground truth known)."""
    from data_tools.synth import demo_mesh, render_dataset

    out = tmp_path_factory.mktemp("scene") / "tiny"
    render_dataset(demo_mesh(), out, res=32, n_views=24, n_val=1, n_test=2, log=lambda *a, **k: None)
    return out


def interrupt_render_writes(monkeypatch, after: int) -> list:
    """Make ``rwf render`` of a NeRF run hit Ctrl+C on its image write number ``after + 1`` (the earlier ones are
    written); returns the list of paths it was asked to write."""
    from rwf_render import nerf_outputs
    from rwf_render.imgio import write_image

    calls = []

    def interrupt(path, pixels, bits=8):
        calls.append(path)
        if len(calls) > after:
            raise KeyboardInterrupt
        write_image(path, pixels, bits)

    monkeypatch.setattr(nerf_outputs, "write_image", interrupt)
    return calls
