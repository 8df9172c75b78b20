"""NeRF options and commands in combination (a helper's hunt of 30 Nov 2026).

- ``--appearance-dim`` with ``--no-view-dependence`` (typed, or the lego-tancik preset's) was stored in config.json
  and silently not built: refused now, as ``--dir-encoding`` is; ``--view-dependence`` undoes a preset's
  ``--no-view-dependence``.
- ``--resume --camera-reg 1`` (the default, the run's own value) was refused as "run: None".
- A run records a fingerprint of each split (``nerf_data.split_fingerprint``), so commands tell which split changed
  since the fit: ``--resume`` refuses a changed training split only (a test split edited since: a warning, the same
  data is fitted), ``rwf eval`` says the split it scores changed, and the refined poses of ``--optimize-cameras``
  warn where they are applied to a reordered training split (they were applied by position without a word).
"""

import json
import shutil
import warnings

import pytest
import torch

from rwf_render import cli
from rwf_render.errors import RwfWarning

from conftest import one_cli_error, random_views_scene  # noqa: E402  (tests/ is on sys.path under pytest)
from test_nerf_bad_input_more import TINY  # noqa: E402


def _fit(data, run, *extra) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY, *extra]) == 0


def test_appearance_codes_need_a_view_dependent_colour(tmp_path, capsys):
    data = random_views_scene(tmp_path / "data", {"train": 4, "test": 1})
    says = one_cli_error(capsys, ["fit", "nerf", data, "--out", tmp_path / "run", "--appearance-dim", "4",
                                  "--no-view-dependence", *TINY])
    assert "--appearance-dim applies to a colour that depends on the view direction" in says
    assert not (tmp_path / "run").exists()
    _fit(data, tmp_path / "run", "--no-view-dependence", "--view-dependence", "--appearance-dim", "2")
    field = json.loads((tmp_path / "run" / "config.json").read_text())["field"]
    assert field["view_dependent"] is True and field["appearance_dim"] == 2
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert any("appearance" in k for k in state), sorted(state)[:10]  # the table was built and trained


def test_resume_accepts_the_default_camera_reg_typed_and_names_the_runs_value(tmp_path, capsys):
    data = random_views_scene(tmp_path / "data", {"train": 4, "test": 1})
    run = tmp_path / "run"
    _fit(data, run, "--optimize-cameras")
    _fit(data, run, "--resume", "--steps", "3", "--camera-reg", "1", "--optimize-cameras")
    says = one_cli_error(capsys, ["fit", "nerf", data, "--out", run, "--resume", "--steps", "4", "--camera-reg", "2",
                                  "--device", "cpu", "--quiet"])
    assert "--camera-reg (run: 1.0, given: 2.0)" in says


@pytest.fixture(scope="module")
def refined_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("combos")
    data = random_views_scene(root / "data", {"train": 6, "val": 1, "test": 2})
    _fit(data, root / "run", "--optimize-cameras")
    return data, root / "run"


def _copy(refined_run, tmp_path):
    """The fitted run and its dataset, copied; the run's config.json names the copy (its fingerprint unchanged)."""
    data, run = (shutil.copytree(p, tmp_path / p.name) for p in refined_run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"] = str(data)
    (run / "config.json").write_text(json.dumps(cfg))
    return data, run


def _edit(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def test_an_unchanged_dataset_gives_no_warning(refined_run, tmp_path, capsys):
    data, run = _copy(refined_run, tmp_path)
    splits = json.loads((run / "config.json").read_text())["dataset"]["splits"]
    assert sorted(splits) == ["test", "train", "val"] and len(set(splits.values())) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    assert "changed since the fit" not in capsys.readouterr().err


def test_a_test_split_edited_since_the_fit_is_said_by_eval_and_resume_goes_on(refined_run, tmp_path, capsys):
    data, run = _copy(refined_run, tmp_path)
    _edit(data / "transforms_test.json", lambda d: d["frames"].pop())
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    assert "the test split changed since the fit; these figures score the views it holds now" in \
        capsys.readouterr().err
    with pytest.warns(RwfWarning, match="the test split changed since the run was trained; it goes on with the same "
                                        "training data"):
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), "--resume", "--steps", "3", "--quiet",
                         "--device", "cpu"]) == 0
    assert json.loads((run / "metrics.json").read_text())["test_images"] == 1


def test_a_reordered_training_split_warns_where_refined_poses_are_applied_and_resume_refuses(refined_run, tmp_path,
                                                                                            capsys):
    from rwf_render.nerf import load_scene_model

    data, run = _copy(refined_run, tmp_path)
    _edit(data / "transforms_train.json", lambda d: d["frames"].reverse())
    with pytest.warns(RwfWarning, match="the training split changed since the fit; its refined poses are applied in "
                                        "frame order"):
        load_scene_model(run)
    says = one_cli_error(capsys, ["fit", "nerf", data, "--out", run, "--resume", "--steps", "3", "--device", "cpu"])
    assert "the dataset changed since the run was trained" in says


def test_training_views_are_rendered_with_their_own_appearance_codes(tmp_path, capsys):
    """A fit with --appearance-dim whose codes differ (set here, large): `rwf render --split train` and `rwf eval`
    of a dataset with only a training split render view i with code i, as nerfstudio renders a training camera (they
    used the codes' mean, the novel-view code, while their poses were the refined ones)."""
    import numpy as np

    from rwf_render.imgio import read_image
    from rwf_render.nerf import load_scene_model
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_task import render_and_target
    from rwf_render.metrics import psnr

    data = random_views_scene(tmp_path / "data", {"train": 4}, channels=3)
    run = tmp_path / "run"
    _fit(data, run, "--appearance-dim", "4", "--background", "white")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    key = next(k for k in ckpt["model"] if "appearance" in k)
    ckpt["model"][key] = torch.randn(ckpt["model"][key].shape, generator=torch.Generator().manual_seed(0)) * 3
    torch.save(ckpt, run / "checkpoint.pt")

    model = load_scene_model(run)
    train = load_split(str(data), "train", 1)
    own = [render_and_target(model, train, i, "white", trained=True) for i in range(4)]
    mean = [render_and_target(model, train, i, "white")[0] for i in range(4)]
    assert all(float((o[0] - m).abs().max()) > 0.05 for o, m in zip(own, mean))  # the codes matter

    assert cli.main(["render", str(run), "--split", "train", "--out", str(tmp_path / "frames"), "--quiet"]) == 0
    for i, (pred, _) in enumerate(own):
        frame, _ = read_image(tmp_path / "frames" / f"rgb_{i:04d}.png")
        assert np.abs(frame[..., :3] - pred.numpy()).max() <= 1 / 255 + 1e-6, i

    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr_split"] == "train"
    assert metrics["psnr"] == pytest.approx(np.mean([psnr(p, t) for p, t in own]), abs=1e-4)


def test_an_edited_test_list_of_one_transforms_file_leaves_the_training_split_unchanged(tmp_path):
    """In a single transforms.json the split lists sit at the top level, which every split's fingerprint covers:
    a test_filenames edit (the training frames the same) is a change of the test split only."""
    from rwf_render.nerf_data import split_fingerprint

    from test_data_tools_combos import _dataset  # noqa: PLC0415

    names = [f"images/img{i:02d}.png" for i in range(12)]
    data = _dataset(tmp_path / "d", val_filenames=names[:2], test_filenames=names[2:4], train_filenames=names[4:])
    before = {s: split_fingerprint(data, s) for s in ("train", "val", "test")}
    top = json.loads((data / "transforms.json").read_text())
    top["test_filenames"] = names[2:3]
    (data / "transforms.json").write_text(json.dumps(top))
    after = {s: split_fingerprint(data, s) for s in ("train", "val", "test")}
    assert after["train"] == before["train"] and after["val"] == before["val"] and after["test"] != before["test"]


def test_a_run_recorded_before_depth_path_maps_were_hashed_resumes_on_the_same_data(tmp_path, capsys):
    """Runs fitted before 29 Nov 2026 hashed no instant-ngp depth_path map and recorded no split: their dataset,
    unchanged, read as changed ("depth/d0.png is new") and --resume was refused. An edited image still is."""
    import numpy as np

    from rwf_render.imgio import write_image
    from rwf_render.nerf_data import dataset_fingerprint
    from rwf_render.resume import LEGACY_KEYS

    from test_data_tools_combos import _dataset  # noqa: PLC0415

    data = _dataset(tmp_path / "d", n=6, integer_depth_scale=0.002)
    (data / "depth").mkdir()
    top = json.loads((data / "transforms.json").read_text())
    for i, f in enumerate(top["frames"]):
        write_image(data / "depth" / f"d{i}.png", np.full((12, 16, 1), 0.5, np.float32))
        f["depth_path"] = f"depth/d{i}.png"
    (data / "transforms.json").write_text(json.dumps(top))
    run = tmp_path / "run"
    _fit(data, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["dataset"] = {k: v for k, v in dataset_fingerprint(data, LEGACY_KEYS).items() if k != "splits"}
    assert "depth/d0.png" not in cfg["dataset"]["files"] and "depth/d0.png" in dataset_fingerprint(data)["files"]
    (run / "config.json").write_text(json.dumps(cfg))
    _fit(data, run, "--resume", "--steps", "3")
    cfg["dataset"]["sha256"] = "0" * 64  # as if an image had changed since
    (run / "config.json").write_text(json.dumps(cfg))
    says = one_cli_error(capsys, ["fit", "nerf", data, "--out", run, "--resume", "--steps", "4", "--device", "cpu"])
    assert "the dataset changed since the run was trained" in says
