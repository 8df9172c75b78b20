"""A NeRF fit whose field collapses to empty space says so once (found on a GPU: the lego-gpu preset's Fourier field
of 4 x 256 RWF layers at lr 3e-3 rendered the white background from early on to its last step, with no message)."""

import pytest
import torch

from conftest import random_views_scene
from rwf_render import cli, nerf_field, nerf_task
from rwf_render.errors import RwfWarning
from rwf_render.nerf_task import CollapseWatch

EMPTY, HIT = torch.full((64,), 1e-6), torch.tensor([1e-6, 0.5])


def test_the_watch_warns_once_after_a_run_of_empty_steps_past_its_start():
    watch = CollapseWatch(after=10, steps=3)
    assert [watch.update(s, EMPTY, 9.0) for s in range(10)] == [None] * 10  # before `after`: never
    assert watch.update(10, EMPTY, 9.0) is None and watch.update(11, EMPTY, 9.0) is None
    text = watch.update(12, EMPTY, 9.0)
    assert text is not None and "collapsed to empty space" in text and "steps 11 to 13" in text and "--lr" in text
    assert all(watch.update(s, EMPTY, 9.0) is None for s in range(13, 40))  # once


def test_a_ray_that_gathers_opacity_restarts_the_count():
    watch = CollapseWatch(after=0, steps=3)
    assert [watch.update(s, b, 9.0) for s, b in enumerate([EMPTY, EMPTY, HIT, EMPTY, EMPTY])] == [None] * 5
    assert "steps 4 to 6" in watch.update(5, EMPTY, 9.0)


def test_an_empty_scene_fitted_well_is_not_a_collapse():
    """A scene that is only background is fitted by an empty field: its training PSNR is high."""
    watch = CollapseWatch(after=0, steps=2)
    assert all(watch.update(s, EMPTY, 35.0) is None for s in range(50))
    assert watch.update(50, torch.zeros(0), 9.0) is None and watch.update(51, torch.zeros(0), 9.0) is not None


def _fit(tmp_path, name):
    data = random_views_scene(tmp_path / "data", {"train": 4, "test": 1})
    return cli.main(["fit", "nerf", str(data), "--out", str(tmp_path / name), "--steps", "8", "--quiet",
                     "--eval-every", "8", "--eval-images", "1", "--grid-resolution", "16", "--steps-per-diagonal",
                     "32", "--width", "16", "--features", "8", "--target-samples", "1024", "--device", "cpu"])


def test_a_fit_whose_density_vanishes_warns_and_a_healthy_one_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(nerf_task.CollapseWatch.__init__, "__defaults__", (2, 3, 1e-3, 20.0))
    with pytest.warns(RwfWarning) as record:
        real = nerf_field.density_activation
        monkeypatch.setattr(nerf_field, "density_activation", lambda name, raw: real(name, raw) * 1e-12)
        assert _fit(tmp_path, "dead") == 0
    assert sum("collapsed to empty space" in str(w.message) for w in record) == 1
    monkeypatch.undo()
    monkeypatch.setattr(nerf_task.CollapseWatch.__init__, "__defaults__", (2, 3, 1e-3, 20.0))
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as healthy:
        warnings.simplefilter("always")
        assert _fit(tmp_path, "alive") == 0
    assert not any("collapsed" in str(w.message) for w in healthy)


def _task(watch):
    task = object.__new__(nerf_task.NeRFTask)  # the state only: no model or data needed
    task.n_rays, task.total_samples, task.collapse = 64, 10, watch
    return task


def _through_checkpoint(state):
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_the_watch_rides_in_the_checkpoint_so_a_resumed_fit_warns_as_an_unbroken_one():
    unbroken = CollapseWatch(after=0, steps=5)
    first = [s for s in range(10) if unbroken.update(s, EMPTY, 9.0)]
    assert first == [4]
    killed = _task(CollapseWatch(after=0, steps=5))
    assert all(killed.collapse.update(s, EMPTY, 9.0) is None for s in range(3))
    resumed = _task(CollapseWatch(after=0, steps=5))
    resumed.load_state_dict(_through_checkpoint(killed.state_dict()))
    assert resumed.collapse.update(3, EMPTY, 9.0) is None
    assert "steps 1 to 5" in resumed.collapse.update(4, EMPTY, 9.0)  # counted from before the kill
    again = _task(CollapseWatch(after=0, steps=5))
    again.load_state_dict(_through_checkpoint(resumed.state_dict()))
    assert all(again.collapse.update(s, EMPTY, 9.0) is None for s in range(5, 40))  # warned once, not after resume
    older = _task(CollapseWatch(after=0, steps=5))
    older.load_state_dict({"n_rays": 80, "total_samples": 5})  # a checkpoint of an earlier version
    assert older.n_rays == 80 and older.collapse.count == 0 and not older.collapse.warned
    for bad in ([-2, 0, 0], [3, -1, 0], [1.5, 2, 0], [None, 0, 0]):
        with pytest.raises(ValueError, match="collapse watch"):
            _task(CollapseWatch()).load_state_dict({"n_rays": 64, "total_samples": 0, "collapse": bad})
