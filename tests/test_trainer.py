"""Trainer: schedules, parameter groups, callbacks, checkpoints that load with weights_only, exact resume."""

import math

import pytest
import torch

from rwf_render import MLP, MLPConfig
from rwf_render.rundir import load_checkpoint, read_history
from rwf_render.trainer import TrainConfig, Trainer, lr_factor


class LineTask:
    """Fit y = 3x - 1 from random mini-batches; evaluate the exact parameter error."""

    def __init__(self):
        self.x = torch.linspace(-1, 1, 256)[:, None]
        self.y = 3 * self.x - 1

    def batch(self, step, generator):
        return torch.randint(256, (32,), generator=generator)

    def loss(self, model, idx):
        mse = torch.mean((model(self.x[idx]) - self.y[idx]) ** 2)
        return {"mse": mse, "zero": 0 * mse}, {"psnr_train": -10 * math.log10(max(float(mse.detach()), 1e-12))}

    def evaluate(self, model):
        return {"psnr": -10 * math.log10(max(float(torch.mean((model(self.x) - self.y) ** 2)), 1e-12))}


def _model(param="rwf"):
    return MLP(1, 1, MLPConfig(depth=2, width=8, param=param), seed=0)


def test_lr_schedules_closed_forms():
    assert lr_factor("const", 50, 100, 0.1) == 1.0
    assert lr_factor("exp", 0, 100, 0.1) == 1.0
    assert lr_factor("exp", 99, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor("exp", 33, 100, 0.1) == pytest.approx(0.1 ** (33 / 99))
    assert lr_factor("cos", 99, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor("cos", 0, 100, 0.1) == pytest.approx(1.0)
    assert [lr_factor("step", s, 100, 0.1, 30) for s in (0, 29, 30, 60, 99)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01, 0.001])
    with pytest.raises(ValueError):
        lr_factor("step", 0, 10, 0.1)  # needs decay_every
    with pytest.raises(ValueError):
        lr_factor("linear", 0, 10, 0.1)


def test_the_warm_up_ramps_linearly_then_hands_over_to_the_schedule():
    assert [lr_factor("const", s, 100, 0.1, warmup=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor("exp", 1, 100, 0.1, warmup=4) == pytest.approx(0.5 * 0.1 ** (1 / 99))  # the product
    assert [lr_factor("exp", s, 100, 0.1, warmup=w) for s in (0, 50) for w in (0, 1)] == pytest.approx(
        [1.0, 1.0, 0.1 ** (50 / 99), 0.1 ** (50 / 99)])  # 0 and 1: no warm-up


def test_the_trainer_applies_the_warm_up_to_every_group(tmp_path):
    cfg = TrainConfig(steps=3, lr=1e-2, scale_lr=1e-3, lr_warmup=3, eval_every=3, device="cpu")
    trainer = Trainer(_model(), LineTask(), cfg, progress=False)
    seen = []
    for _ in range(3):
        logged = trainer.step()
        seen.append(([g["lr"] for g in trainer.optimizer.param_groups], logged["lr"]))
    assert seen == [([pytest.approx(1e-2 * k / 3), pytest.approx(1e-3 * k / 3)], pytest.approx(1e-2 * k / 3))
                    for k in (1, 2, 3)]


def test_fit_learns_and_uses_a_separate_scale_group(tmp_path):
    cfg = TrainConfig(steps=300, lr=1e-2, scale_lr=1e-3, eval_every=100, ckpt_every=100, device="cpu",
                      schedule="exp", loss_weights={"zero": 5.0})
    trainer = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path, progress=False)
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert names == ["main", "rwf_scales"]
    first = trainer.evaluate()["psnr"]
    trainer.fit()
    assert trainer.last_eval["psnr"] > first + 10
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs == pytest.approx([1e-3, 1e-4])  # both decayed to lr_final at the last step
    assert [r["step"] for r in read_history(tmp_path / "history.csv")] == [100, 200, 300]
    state = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only=True inside
    assert state["step"] == 300 and set(state["model"]) == set(trainer.model.state_dict())


def test_callbacks_see_every_step_and_can_stop(tmp_path):
    seen = []

    class Stopper:
        def on_step(self, trainer, stats):
            seen.append((trainer.step_idx, stats["loss"]))
            if trainer.step_idx == 7:
                trainer.stop_requested = True

        def on_end(self, trainer):
            seen.append("end")

    cfg = TrainConfig(steps=50, eval_every=5, device="cpu")
    trainer = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path, callbacks=[Stopper()], progress=False)
    trainer.fit()
    assert [s[0] for s in seen[:-1]] == list(range(1, 8)) and seen[-1] == "end"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 7  # a stop saves where it is


def test_resume_is_exact(tmp_path):
    cfg = TrainConfig(steps=40, lr=1e-2, eval_every=10, ckpt_every=10, device="cpu", deterministic=True)
    straight = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path / "a", progress=False)
    (tmp_path / "a").mkdir()
    straight.fit()
    (tmp_path / "b").mkdir()
    half = Trainer(_model(), LineTask(), TrainConfig(**{**cfg.__dict__, "steps": 20}), run_dir=tmp_path / "b",
                   progress=False)
    half.fit()
    torch.manual_seed(1234)  # disturb the global RNG: resume must restore it
    resumed = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path / "b", progress=False)
    assert resumed.resume() and resumed.step_idx == 20
    resumed.fit()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["step"] for r in resumed.history] == [10, 20, 30, 40]
    torch.use_deterministic_algorithms(False)


class Clock:
    """A stand-in for time.perf_counter that advances ``tick`` seconds per call: a step (read at its start and its
    end) takes one tick, whatever the machine's load."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_max_seconds_stops_at_the_budget_and_resume_extends_it(tmp_path, monkeypatch, capsys):
    """--max-seconds: with each step taking 0.5 s, a 2 s budget stops after step 4 of 100, which is evaluated and
    checkpointed as a last step; a resume with the same budget takes no step and says so; a resume with 3 s goes
    on to step 6, and the schedule still spans the 100 steps."""
    import rwf_render.trainer as trainer_module

    monkeypatch.setattr(trainer_module.time, "perf_counter", Clock(0.5))
    cfg = TrainConfig(steps=100, lr=1e-2, eval_every=50, ckpt_every=50, device="cpu", schedule="exp",
                      max_seconds=2.0)
    trainer = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path, progress=False)
    trainer.fit()
    assert trainer.step_idx == 4 and trainer.seconds == pytest.approx(2.0)
    assert [r["step"] for r in read_history(tmp_path / "history.csv")] == [4]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert "--max-seconds 2 reached at step 4 of 100" in capsys.readouterr().err

    again = Trainer(_model(), LineTask(), cfg, run_dir=tmp_path, progress=False)
    assert again.resume()
    again.fit()
    assert again.step_idx == 4 and "pass a larger --max-seconds" in capsys.readouterr().err

    longer = Trainer(_model(), LineTask(), TrainConfig(**{**cfg.__dict__, "max_seconds": 3.0}), run_dir=tmp_path,
                     progress=False)
    assert longer.resume()
    longer.fit()
    assert longer.step_idx == 6 and [r["step"] for r in read_history(tmp_path / "history.csv")] == [4, 6]
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.1 ** (5 / 99))  # not at its end


def test_max_seconds_must_be_positive():
    from rwf_render.train_config import check_train_config

    for bad in (0.0, -1.0, math.inf, math.nan, True, "60"):
        with pytest.raises(ValueError, match="max_seconds"):
            check_train_config(TrainConfig(max_seconds=bad))
    check_train_config(TrainConfig(max_seconds=None))
    check_train_config(TrainConfig(max_seconds=1))
