"""The viewer on the real NeRF pipeline (rwf_render.nerf): a finished run, and a fit with the live viewer."""

import pytest
import torch

from rwf_render import cli
from rwf_render import trainer as trainer_module
from rwf_render.errors import UserError
from viewer.camera import image_size
from viewer.nerf_source import nerf_api
from viewer.sources import open_run, render_view

from test_viewer_sources import check_sizes, views  # noqa: E402  (tests/ is on sys.path under pytest)

CPU = torch.device("cpu")
TINY_FIT = ["--steps", "2", "--grid-resolution", "16", "--width", "32", "--features", "16", "--quiet"]


@pytest.fixture(scope="module")
def nerf_fit(tmp_path_factory):
    """One tiny NeRF fit with the live viewer attached as ``rwf fit nerf ... --view`` attaches it (the process's
    trainer callbacks), and a probe that renders the live snapshot after the last step."""
    try:
        nerf_api()
    except UserError as e:
        pytest.skip(f"NeRF pipeline not available yet ({e})")
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from data_tools.cli import main as data_main
    from viewer.live import LiveViewer

    root = tmp_path_factory.mktemp("nerf")
    data, run = root / "data", root / "run"
    assert data_main(["data", "synth", "demo", str(data), "--res", "24", "--views", "6", "--val", "1", "--test",
                      "1"]) == 0
    live, seen = LiveViewer("nerf", port=0), {}

    class Probe:
        def on_end(self, trainer):
            source = live.app.source
            source.offer_state({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            frame = render_view(source, views(source, aspects=(1.25,))[0], 40, "rgb")
            seen.update(shape=frame.rgb.shape, cameras=len(source.cameras), thumb=source.thumbnail(0).shape)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "_PROCESS_CALLBACKS", [live, Probe()])
        try:
            assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY_FIT]) == 0
        finally:
            if live.app is not None:
                live.app.stop()
    return run, seen


def test_live_viewer_on_a_nerf_fit(nerf_fit):
    w, h = image_size(40, 1.25)
    assert nerf_fit[1] == {"shape": (h, w, 3), "cameras": 6, "thumb": (24, 24, 4)}


def test_finished_run_renders_requested_sizes(nerf_fit):
    source = open_run(nerf_fit[0], CPU)
    assert source.cameras is not None and len(source.cameras) == 6
    assert len(source.image_paths) == 6 and source.thumbnail(0).shape[:2] == (24, 24)
    check_sizes(source, source.modes, sides=(24,), aspects=(0.75,))
