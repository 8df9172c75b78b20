"""--orbit and the viewer on a real capture with per-image bounds: the field was fitted only beyond each photo's
near bound, so a view from the photos' ring rendered from 0.02 box diagonals looked through what the field paints
in front of the photos (a quality hunt: two of eight orbit frames of the 23-photo capture were haze, the statue
10.3 units away and every pixel opaque at 4.4). The training bounds are carried to each frame's distance."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, look_at
from rwf_render.nerf_outputs import _cameras
from rwf_render.render_paths import bounds_at_distance


def _ring(distances) -> Cameras:
    phi = np.linspace(0, 2 * np.pi, len(distances), endpoint=False)
    eyes = np.stack([np.cos(phi), np.sin(phi), 0.3 * np.ones_like(phi)], 1)
    eyes = eyes / np.linalg.norm(eyes, axis=1, keepdims=True) * np.asarray(distances)[:, None]
    c2w = look_at(torch.tensor(eyes), torch.zeros(3, dtype=torch.float64))
    return Cameras.create(c2w, fx=50.0, width=40, height=30)


def test_bounds_scale_with_the_distance_to_the_centre():
    """Closed form: near fractions 0.8 and 0.9 of 10 and 12 units (8 / 10, 10.8 / 12), far 1.5 and 1.2: at 5
    units the near is 0.9 x 0.8 x 5, the far 1.5 x 5; no bounds, no result."""
    cams = _ring([10.0, 12.0])
    near_far = torch.tensor([[8.0, 15.0], [10.8, 14.4]])
    got = bounds_at_distance(cams, torch.zeros(3), near_far, torch.tensor([5.0, 20.0]))
    np.testing.assert_allclose(got.numpy(), [[0.9 * 0.8 * 5, 1.5 * 5], [0.9 * 0.8 * 20, 1.5 * 20]], rtol=1e-9)
    assert bounds_at_distance(cams, torch.zeros(3), None, torch.tensor([5.0])) is None
    inf = bounds_at_distance(cams, torch.zeros(3), torch.tensor([[8.0, np.inf], [10.8, np.inf]]), [5.0])
    assert inf[0, 1] == np.inf


@pytest.mark.parametrize("with_bounds", [True, False])
def test_orbit_frames_render_with_the_training_bounds(with_bounds):
    cams = _ring([10.0, 10.5, 11.0, 9.5])
    near_far = torch.tensor([[7.9, 14.0], [8.3, 14.0], [8.9, 15.0], [7.6, 13.0]]) if with_bounds else None
    model = SimpleNamespace(train_cameras=cams, aabb=torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0]),
                            train_near_far=near_far)
    args = SimpleNamespace(split=None, orbit=6, camera_path=None, interpolate=None, spiral=None, fps=24)
    orbit, name, fps, bounds = _cameras(model, args)
    assert name == "orbit" and len(orbit) == 6
    if not with_bounds:
        assert bounds is None  # an object-centred scene keeps the run's own near
        return
    r = (orbit.c2w[:, :3, 3].double()).norm(dim=1)
    frac = (near_far[:, 0].double() / cams.c2w[:, :3, 3].double().norm(dim=1)).min()
    np.testing.assert_allclose(bounds[:, 0].numpy(), (0.9 * frac * r).numpy(), rtol=1e-6)
    assert (bounds[:, 0] > 6.0).all() and (bounds[:, 1] > bounds[:, 0]).all()


def test_the_viewer_renders_a_browser_camera_with_bounds_at_its_distance(monkeypatch):
    from viewer.nerf_source import NeRFSource

    cams = _ring([10.0, 10.0, 10.0])
    seen = []

    class Api:
        @staticmethod
        def render_camera(model, cam, max_samples=None, chunk=None, **bounds):
            seen.append(bounds)
            h, w = int(cam.height[0]), int(cam.width[0])
            return {"rgb": torch.zeros(h, w, 3), "depth": torch.zeros(h, w), "opacity": torch.zeros(h, w)}

    model = SimpleNamespace(aabb=torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0]), train_cameras=cams,
                            train_near_far=torch.tensor([[8.0, 12.0]] * 3), train_image_paths=[])
    source = NeRFSource(model, torch.device("cpu"), Api)
    source.render(_ring([5.0]), "rgb")
    assert seen[-1]["near"] == pytest.approx(0.9 * 0.8 * 5.0) and seen[-1]["far"] == pytest.approx(1.2 * 5.0)
    model.train_near_far = None  # a synthetic scene: the run's own bounds
    NeRFSource(model, torch.device("cpu"), Api).render(_ring([5.0]), "rgb")
    assert seen[-1] == {}
    # a fit in progress (the live viewer): the bounds come from the trainer's training split
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"), run_dir=None,
                              task=SimpleNamespace(train=SimpleNamespace(cameras=cams,
                                                                         near_far=torch.tensor([[8.0, 12.0]] * 3))))
    monkeypatch.setattr(NeRFSource, "snapshot", staticmethod(lambda m: m))  # the stand-in model is no nn.Module
    live = NeRFSource.from_trainer(trainer, {}, api=Api)
    live.render(_ring([5.0]), "rgb")
    assert seen[-1]["near"] == pytest.approx(0.9 * 0.8 * 5.0)


@pytest.mark.parametrize("with_bounds", [True, False])
def test_camera_path_frames_render_with_the_training_bounds(with_bounds, tmp_path, monkeypatch):
    """A path recorded in the viewer (which renders with the bounds) renders the same way from the command line: each
    frame with the training bounds carried to its distance from the box centre, not the run's own near."""
    import rwf_render.camera_path as camera_path

    cams = _ring([10.0, 10.0, 10.0])
    path = _ring([4.0, 6.0])
    monkeypatch.setattr(camera_path, "path_cameras", lambda p: (path, 30.0))
    near_far = torch.tensor([[8.0, 12.0]] * 3) if with_bounds else None
    model = SimpleNamespace(train_cameras=cams, aabb=torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0]),
                            train_near_far=near_far)
    args = SimpleNamespace(split=None, orbit=None, camera_path=str(tmp_path / "p.json"), interpolate=None,
                           spiral=None, fps=24, given_options=frozenset())
    got, name, fps, bounds = _cameras(model, args)
    assert name == "p" and fps == 30.0 and len(got) == 2
    if not with_bounds:
        assert bounds is None
        return
    np.testing.assert_allclose(bounds.numpy(), [[0.9 * 0.8 * 4, 1.2 * 4], [0.9 * 0.8 * 6, 1.2 * 6]], rtol=1e-6)
