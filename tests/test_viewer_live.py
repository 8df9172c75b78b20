"""``rwf fit ... --view``: the live viewer reads the trainer and never changes what it computes; pause blocks
training between steps until resumed."""

import threading
import time

import numpy as np
import pytest
import torch

from rwf_render.fields import EncodingConfig, MLPConfig
from rwf_render.image import ImageConfig, ImageTask, build_model
from rwf_render.trainer import TrainConfig, Trainer
from viewer.camera import ViewCamera
from viewer.live import LiveViewer, make_callback
from viewer.sources import render_view

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


def make_trainer(steps: int, callbacks=()) -> Trainer:
    image = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    cfg = ImageConfig(size=16, encoding=EncodingConfig(kind="fourier", m=16, sigma=4.0),
                      mlp=MLPConfig(depth=3, width=32, out_activation="sigmoid", param="rwf"),
                      train=TrainConfig(steps=steps, eval_every=5, ckpt_every=10**6, device="cpu"))
    return Trainer(build_model(cfg, 3), ImageTask(image, cfg, CPU), cfg.train, run_dir=None,
                   callbacks=list(callbacks), progress=False)


class Watching:
    """Stands in for a connected browser: the trainer's callback snapshots only while someone watches."""

    def notify_change(self):
        pass

    def stop(self, join=None):
        pass


def test_live_viewer_does_not_change_training():
    """Same seed, same steps: identical parameters with the viewer snapshotting at every step and a renderer
    drawing the snapshots concurrently as without any viewer."""
    headless = make_trainer(30)
    headless.fit()

    live = LiveViewer("image", port=0, refresh_s=0.0)
    trainer = make_trainer(30, [live])
    stop, frames = threading.Event(), []

    def draw():
        live_started.wait()
        c2w = np.eye(4)
        c2w[:3, 3] = [0.5, -0.5, 1.2]  # in front of the image plane, looking at it
        view = ViewCamera.from_c2w(c2w, 0.9, 1.0)
        while not stop.is_set():
            frames.append(render_view(live.app.source, view, 24, "reconstruction"))

    live_started = threading.Event()
    original_on_start = live.on_start
    offered, loaded_mid_training = [], []

    def on_start(tr):
        original_on_start(tr)
        live.app.renderers[99] = Watching()
        source = live.app.source
        hand_over = source.offer_state
        source.offer_state = lambda state: (offered.append(1), hand_over(state))  # count the snapshots
        live_started.set()

    class Rendezvous:
        """At steps 10 and 20, wait (on the training thread) until the painter has loaded a newer snapshot, so
        loads provably happen while training runs, however the threads are scheduled."""

        def on_step(self, tr, stats):
            if tr.step_idx in (10, 20):
                seen = live.app.source.version
                for _ in range(3000):
                    if live.app.source.version > seen:
                        loaded_mid_training.append(tr.step_idx)
                        break
                    time.sleep(0.01)

    live.on_start = on_start
    trainer.callbacks.append(Rendezvous())  # after the live viewer, whose snapshot of this step comes first
    painter = threading.Thread(target=draw, daemon=True)
    painter.start()
    try:
        trainer.fit()
    finally:
        stop.set()
        painter.join(30)
        if live.app is not None:
            live.app.stop()
    assert len(offered) == 31  # refresh_s 0 while someone watches: a snapshot at every step and one at the end
    assert loaded_mid_training == [10, 20]  # and the renderer loaded snapshots while training ran
    assert frames and frames[-1].rgb.shape == (24, 24, 3)
    for (name, a), b in zip(headless.model.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["psnr"] for r in live._history] == [r["psnr"] for r in trainer.history]


def test_pause_blocks_between_steps_until_resumed(capsys):
    live = LiveViewer("image", port=0)
    trainer = make_trainer(12, [live])
    live.pause()
    runner = threading.Thread(target=trainer.fit, daemon=True)
    runner.start()
    try:
        assert live.waiting.wait(120), "on_step never blocked"
        held = trainer.step_idx
        runner.join(1.0)
        assert runner.is_alive() and trainer.step_idx == held == 1  # blocked inside on_step of the first step
        live.resume()
        runner.join(120)
        assert not runner.is_alive() and trainer.step_idx == 12
        said = [line for line in capsys.readouterr().err.splitlines() if "paused" in line or "resumed" in line]
        # the terminal hears of the pause: a page closed after it left the fit waiting without a word there
        assert said == ["rwf: training paused from the viewer at step 1; resume it on the page (or Ctrl+C: the fit "
                        "saves a checkpoint and stops)", "rwf: training resumed at step 1"], said
    finally:
        live.resume()
        if live.app is not None:
            live.app.stop()


def test_make_callback_reads_the_fit_options():
    class Args:
        kind, host, port = "sdf", "0.0.0.0", 9001

    cb = make_callback(Args)
    assert (cb.kind, cb.host, cb.port) == ("sdf", "0.0.0.0", 9001)
    assert cb.app is None  # nothing is served before training starts



def test_fit_with_view_serves_and_finishes(tmp_path):
    """``rwf fit image --view`` through the installed entry point: the URL is printed, training runs to the end."""
    import subprocess
    import sys

    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rwf_render", "fit", "image", "--size", "24", "--steps", "30",
                        "--width", "32", "--features", "32", "--view", "--port", "0", "--quiet", "--out", str(run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "live viewer at http://127.0.0.1:" in r.stdout + r.stderr
    assert len((run / "history.csv").read_text().splitlines()) > 1 and (run / "metrics.json").is_file()
