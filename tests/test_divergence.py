"""A fit whose loss or weights stop being finite stops with one message and keeps its last finite checkpoint (a
helper's hunt: every pipeline ran on to exit 0, wrote metrics of null and an IoU of 0.0 for a NaN field, black
error maps, and a NaN checkpoint over the last good one, which --resume then refused)."""

import json

import pytest
import torch

from conftest import one_cli_error
from rwf_render.cli import main as cli_main
from rwf_render.errors import Diverged, RwfWarning
from rwf_render.resume import fit_each
from rwf_render.rundir import CHECKPOINT, load_checkpoint
from rwf_render.trainer import TrainConfig, Trainer
from test_nerf_bad_input_more import TINY
from test_trainer import LineTask, _model


class BlowUp(LineTask):
    """The line task whose loss becomes NaN from step ``at`` on (1-based)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, model, idx):
        self.calls += 1
        terms, stats = super().loss(model, idx)
        if self.calls >= self.at:
            terms["mse"] = terms["mse"] * float("nan")
        return terms, stats


def test_a_nan_loss_stops_the_fit_and_keeps_the_last_checkpoint(tmp_path):
    trainer = Trainer(_model(), BlowUp(at=13), TrainConfig(steps=40, lr=1e-2, eval_every=5, ckpt_every=5),
                      run_dir=tmp_path, progress=False)
    with pytest.raises(Diverged, match=r"the loss became nan at step 13: .* last checkpoint \(step 10\) is kept"):
        trainer.fit()
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = Trainer(_model(), LineTask(), TrainConfig(steps=10, lr=1e-2, eval_every=5, ckpt_every=5),
                      run_dir=tmp_path, progress=False)
    trainer.fit()
    before = (tmp_path / CHECKPOINT).read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(Diverged, match=r"weights stopped being finite numbers at step 10"):
        trainer.save()
    assert (tmp_path / CHECKPOINT).read_bytes() == before


def test_image_fit_that_diverges_exits_with_one_message(tmp_path, capsys):
    run = tmp_path / "run"
    line = one_cli_error(capsys, ["fit", "image", "--out", run, "--size", "32", "--width", "32", "--features", "16",
                                  "--steps", "60", "--eval-every", "5", "--ckpt-every", "5", "--rwf-log-scale",
                                  "--lr", "30", "--lr-warmup", "40", "--quiet"])
    assert "the fit diverged and stopped" in line and "lower --lr" in line
    assert not (run / "metrics.json").exists() and not (run / "reconstruction.png").exists()
    if (run / CHECKPOINT).exists():
        state = load_checkpoint(run / CHECKPOINT)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nerf_fit_that_diverges_exits_with_one_message(tiny_scene, tmp_path, capsys):
    from rwf_render import cli

    capsys.readouterr()
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "run"), *TINY, "--steps", "20",
                     "--lr", "1000"]) == 2
    errors = [s for s in capsys.readouterr().err.splitlines() if s.startswith("rwf: error:")]  # after the summary
    assert len(errors) == 1 and "the fit diverged and stopped" in errors[0], errors
    assert not (tmp_path / "run" / "metrics.json").exists()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["lr"] == 1000


@pytest.mark.parametrize("cone", ["1", "1000"])
def test_a_cone_angle_that_jumps_over_the_scene_is_refused(capsys, cone):
    """--cone-angle 1000 left every ray without a sample; the collapse warning then blamed the learning rate."""
    line = one_cli_error(capsys, ["fit", "nerf", "--cone-angle", cone, "--steps", "2"])
    assert f"--cone-angle {cone}: a step is C times the distance" in line


@pytest.mark.parametrize("kind", ["image", "nerf"])
def test_a_warm_up_longer_than_the_fit_is_warned(tmp_path, kind):
    from rwf_render import cli
    from rwf_render.errors import RwfWarning

    tiny = (["--size", "16", "--width", "16", "--features", "8"] if kind == "image" else
            ["--width", "16", "--features", "8", "--grid-resolution", "16", "--eval-images", "1"])
    with pytest.warns(RwfWarning, match=r"--lr-warmup 100 is longer than the fit's 3 steps: .* 0\.03 of --lr"):
        assert cli.main(["fit", kind, "--out", str(tmp_path / "run"), "--steps", "3", "--lr-warmup", "100", "--quiet",
                         *tiny]) == 0


def test_compare_goes_on_past_a_parameterization_that_diverges(tmp_path):
    # RWF with log scales at lr 30 goes to NaN within the warm-up; plain and WN stay finite. A diverged fit is a
    # result of the comparison: it is in the table, and the others are still trained and written.
    run = tmp_path / "cmp"
    with pytest.warns(RwfWarning, match="--compare: rwf: .*the loss became nan.*goes on without it"):
        assert cli_main(["fit", "image", "--compare", "--out", str(run), "--size", "16", "--width", "32",
                         "--features", "16", "--steps", "30", "--eval-every", "5", "--ckpt-every", "5",
                         "--rwf-log-scale", "--lr", "30", "--lr-warmup", "30", "--quiet"]) == 0
    results = json.loads((run / "compare.json").read_text())
    assert "the fit diverged" in results["rwf"]["diverged"] and "psnr" not in results["rwf"]
    assert all(results[p]["steps"] == 30 for p in ("plain", "wn"))
    assert "| rwf | diverged |" in (run / "compare.md").read_text()
    assert (run / "compare.png").is_file()


def test_compare_where_every_parameterization_diverges_is_an_error():
    def fit_param(param, cfg, run_dir, resume):
        raise Diverged(f"{param} diverged")

    runs = [(p, None, None, False) for p in ("plain", "wn", "rwf")]
    with pytest.warns(RwfWarning), pytest.raises(Diverged, match="^plain diverged$"):
        fit_each(runs, fit_param)
    assert fit_each(runs[:1], lambda *a: (7,)) == ({"plain": (7,)}, {"plain": 7})


def test_a_dead_network_is_warned_about_once(tmp_path):
    # At --lr 10 the image field's sigmoid saturates within ten steps: one colour at every pixel, a loss
    # bit-identical at every evaluation, and nothing said (the NeRF collapse warning has no image counterpart).
    argv = ["fit", "image", "--size", "24", "--width", "32", "--features", "16", "--steps", "30", "--eval-every", "10",
            "--quiet"]
    with pytest.warns(RwfWarning, match="the field gives one value at every test pixel") as seen:
        assert cli_main([*argv, "--out", str(tmp_path / "dead"), "--lr", "10"]) == 0
    assert sum("one value" in str(w.message) for w in seen) == 1
    rows = (tmp_path / "dead" / "history.csv").read_text().splitlines()[1:]
    assert len({row.split(",")[2] for row in rows}) == 1  # the loss column: the network did not move
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli_main([*argv, "--out", str(tmp_path / "alive")]) == 0


def test_constant_watch_needs_every_value_equal():
    from rwf_render.trainer import ConstantWatch

    watch = ConstantWatch("point")
    watch.check(torch.tensor([[0.5, 1.0], [0.5, 1.0 + 1e-7]]))
    assert not watch.warned
    with pytest.warns(RwfWarning, match="one value at every point"):
        watch.check(torch.full((5, 2), 0.25))
    watch.check(torch.full((5, 2), 0.25))  # once
    assert watch.warned


def test_a_one_colour_image_fitted_exactly_is_no_dead_network(tmp_path):
    # The review of the warning: a white image fitted to its constant was called a dead network.
    import warnings

    from rwf_render.imgio import write_image

    image = tmp_path / "white.png"
    write_image(image, torch.ones(8, 8, 3).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli_main(["fit", "image", str(image), "--out", str(tmp_path / "run"), "--width", "16",
                         "--features", "8", "--steps", "60", "--lr", "0.1", "--eval-every", "20", "--quiet"]) == 0
