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
    # A run started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored: Python
    # then never raises KeyboardInterrupt, and the tests of Ctrl+C (in this process, and in the commands they start,
    # which inherit an ignored signal too) would wait forever. Those tests need Ctrl+C delivered as a user's would be.
    import signal  # noqa: PLC0415

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


STILL_LIFE_STEPS = ["--steps", "1000", "--eval-images", "1", "--quiet", "--grid-resolution", "32",
                    "--steps-per-diagonal", "192", "--width", "64", "--features", "32", "--sigma", "4",
                    "--target-samples", "4096", "--eval-every", "1000", "--background", "random", "--device", "cpu"]


@pytest.fixture(scope="session")
def still_life_run(tmp_path_factory):
    """1000 steps on a scene like tiny_scene (its own copy: tiny_scene is per module) with random backgrounds (a
    white one lets the field paint the transparent background as white haze, whose depths are no surface): 26.6 dB
    on its test views. Shared by the render-path and export tests; a test may add files to it, never change the
    fit's own, nor the scene."""
    import warnings

    from data_tools.synth import demo_mesh, render_dataset
    from rwf_render import cli

    root = tmp_path_factory.mktemp("still_life")
    render_dataset(demo_mesh(), root / "scene", res=32, n_views=24, n_val=1, n_test=2, log=lambda *a, **k: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(root / "scene"), "--out", str(root / "run"), *STILL_LIFE_STEPS]) == 0
    return root / "run"


def one_cli_error(capsys, argv) -> str:
    """Run ``rwf`` with ``argv`` (any items, turned into strings), expect exit 2 and exactly one ``rwf: error:``
    line on stderr (warnings ignored); return that line."""
    import warnings

    from rwf_render import cli

    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rwf: error:"), err
    return err[0]


def interrupt_render_writes(monkeypatch, after: int) -> list:
    """Make ``rwf render`` (a folder of frames) hit Ctrl+C on its image write number ``after + 1`` (the earlier ones are
    written); returns the list of paths it was asked to write."""
    from rwf_render import frame_folder
    from rwf_render.imgio import write_image

    calls = []

    def interrupt(path, pixels, bits=8):
        calls.append(path)
        if len(calls) > after:
            raise KeyboardInterrupt
        write_image(path, pixels, bits)

    monkeypatch.setattr(frame_folder, "write_image", interrupt)
    return calls


RANDOM_VIEWS_RADIUS = 4.0  # camera distance to the origin; the Blender scene box is +-0.5 / 0.33 = +-1.52 about it


def random_views_scene(root: Path, counts: dict, channels: int = 4) -> Path:
    """A Blender-format dataset with ``counts[split]`` random 8x8 views on a circle of radius RANDOM_VIEWS_RADIUS
    around the origin: RGBA with alpha in [0, 1) (``channels`` 4) or opaque RGB (3)."""
    import json  # noqa: PLC0415
    import math  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from rwf_render.cameras import look_at  # noqa: PLC0415
    from rwf_render.imgio import write_image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(n):
            write_image(root / split / f"{split}_{i}.png", rng.random((8, 8, channels)).astype(np.float32))
            a = 2 * math.pi * (i + 0.5 * (split != "train")) / n
            eye = [RANDOM_VIEWS_RADIUS * math.cos(a), RANDOM_VIEWS_RADIUS * math.sin(a), 1.0]
            frames.append({"file_path": f"./{split}/{split}_{i}",
                           "transform_matrix": look_at(eye, (0.0, 0.0, 0.0)).tolist() + [[0.0, 0.0, 0.0, 1.0]]})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


def sized_frames_dataset(root: Path, sizes, top: dict) -> Path:
    """A single transforms.json in ``root`` with one grey image per (width, height) of ``sizes``, cameras looking
    at the origin, and the top-level keys ``top`` (focal lengths, principal point): for the loader's and rwf data
    check's rules on images of several sizes."""
    import json  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from rwf_render.cameras import look_at  # noqa: PLC0415
    from rwf_render.imgio import write_image  # noqa: PLC0415

    root.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (w, h) in enumerate(sizes):
        write_image(root / f"{i}.png", np.full((h, w, 3), 0.5, np.float32))
        frames.append({"file_path": f"{i}.png",
                       "transform_matrix": look_at([4.0, 2.0 * i, 1.0], (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]})
    (root / "transforms.json").write_text(json.dumps({**top, "frames": frames}))
    return root
