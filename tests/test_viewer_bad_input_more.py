"""More bad input for ``rwf view``: addresses it cannot listen on, broken run files, a checkpoint replaced by
another model's. Each ends in one readable error (or a warning while the rest is shown), never a hang or a dead
thread."""

import socket
import threading
import types

import numpy as np
import pytest
import torch

from rwf_render.errors import UserError
from rwf_render.rundir import save_checkpoint
from viewer.app import listen_port
from viewer.sources import Source, run_metrics

CPU = torch.device("cpu")


def _unused_test_address() -> str:
    """An address of TEST-NET-1 (RFC 5737), which no machine of ours has."""
    return "192.0.2.1"


@pytest.mark.parametrize("host, message", [
    (_unused_test_address(), "cannot listen there"),
    ("999.1.1.1", "not an address or host name"),
])
def test_hosts_that_cannot_be_bound_are_one_error(host, message):
    with pytest.raises(UserError, match=message):
        listen_port(host, 0)


def test_busy_port_moves_up_and_the_last_port_busy_is_an_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert listen_port("127.0.0.1", port) > port
    with socket.socket() as last:
        try:
            last.bind(("127.0.0.1", 65535))
        except OSError:
            pytest.skip("port 65535 is in use here")
        last.listen()
        with pytest.raises(UserError, match="no free port"):
            listen_port("127.0.0.1", 65535)


def test_start_on_a_foreign_host_fails_instead_of_hanging():
    """viser waited for ever (its server thread gave up after 1000 ports and nobody told the caller)."""
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from viewer.app import ViewerApp

    from test_viewer_app import tiny_image_source  # noqa: PLC0415  (tests/ is on sys.path under pytest)

    app, result = ViewerApp(tiny_image_source(), host=_unused_test_address(), port=0), {}

    def start():
        try:
            result["url"] = app.start()
        except UserError as e:
            result["error"] = str(e)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(30)
    try:
        assert not thread.is_alive(), "ViewerApp.start hung on a host it cannot bind"
        assert "cannot listen there" in result.get("error", "")
    finally:
        app.stop()


def test_live_view_checks_the_address_before_the_fit_starts():
    from viewer.live import make_callback

    args = types.SimpleNamespace(kind="image", host=_unused_test_address(), port=0)
    with pytest.raises(UserError, match="cannot listen there"):
        make_callback(args)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"psnr"'])
def test_unreadable_metrics_are_a_warning_not_the_end(tmp_path, capsys, content):
    """A metrics.json that is not a JSON object used to end ``rwf view`` (a list: with a traceback)."""
    (tmp_path / "metrics.json").write_text(content)
    assert run_metrics(tmp_path) == {}
    err = capsys.readouterr().err
    assert "warning: metrics left out" in err and len(err.strip().splitlines()) == 1


def test_a_config_the_nerf_pipeline_cannot_read_is_one_error(tmp_path):
    from viewer.nerf_source import NeRFSource

    class API:
        @staticmethod
        def load_scene_model(run, device):
            return {}["field"]  # what a config.json without "field" did in rwf_render.nerf

    with pytest.raises(UserError, match="not a valid nerf run config"):
        NeRFSource.from_run(tmp_path, {"kind": "nerf"}, CPU, api=API)


def test_reload_of_another_models_checkpoint_keeps_the_view(tmp_path, capsys):
    """The run's checkpoint replaced by a fit of another size: reloading it used to hand the render threads a state
    dict that load_state_dict rejects, which ended them."""
    from viewer.panels import reload_run

    model = torch.nn.Linear(2, 3)
    source = Source(model, CPU, run=tmp_path)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": torch.nn.Linear(2, 4).state_dict()})
    with pytest.raises(UserError, match="does not fit the model shown"):
        source.reload()
    app = types.SimpleNamespace(source=source, frame_status=types.SimpleNamespace(content=""))
    reload_run(app)  # the reload button: a message on the page, nothing offered
    assert "not reloaded" in app.frame_status.content and "checkpoint not reloaded" in capsys.readouterr().err
    assert not source.sync() and source.version == 0
    good = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": good})
    assert source.reload() and source.sync() and source.version == 1
    assert np.allclose(model.weight.detach().numpy(), 0.5)
