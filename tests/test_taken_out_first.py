"""``rwf fit --out RUN`` into a folder that refuses the fit (a run without --force, files that are no run) says so
before it reads any input: a NeRF fit loaded its whole dataset first (minutes on a large capture), then refused."""

from conftest import one_cli_error, random_views_scene
from rwf_render import cli, nerf

from test_force_keeps_old_run import old_run  # noqa: E402,F401  (a fixture: a finished image run)
from test_shape_image_bad_input_more import IMG_TINY  # noqa: E402  (tests/ is on sys.path under pytest)


def _no_loading(monkeypatch):
    def load_split(*a, **k):
        raise AssertionError("the dataset was read before the run folder was checked")
    monkeypatch.setattr(nerf, "load_split", load_split)


def test_a_nerf_fit_into_an_existing_run_is_refused_before_the_dataset_loads(old_run, tmp_path, monkeypatch,
                                                                              capsys):
    data = random_views_scene(tmp_path / "data", {"train": 3, "test": 1})
    _no_loading(monkeypatch)
    before = sorted(p.name for p in old_run.iterdir())
    line = one_cli_error(capsys, ["fit", "nerf", data, "--out", old_run, "--steps", "2", "--quiet"])
    assert "run directory exists; pass --force to overwrite or --resume to continue" in line
    assert sorted(p.name for p in old_run.iterdir()) == before


def test_a_folder_of_other_files_is_refused_before_the_dataset_loads_even_with_force(tmp_path, monkeypatch, capsys):
    data = random_views_scene(tmp_path / "data", {"train": 3, "test": 1})
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    _no_loading(monkeypatch)
    line = one_cli_error(capsys, ["fit", "nerf", data, "--out", notes, "--force", "--quiet"])
    assert "holds files but is not a run" in line and (notes / "todo.txt").read_text() == "mine"
    line = one_cli_error(capsys, ["fit", "nerf", data, "--out", notes / "todo.txt", "--quiet"])
    assert "exists and is not a directory" in line


def test_force_and_resume_still_reach_the_fit(old_run, capsys):
    """The early check refuses only what prepare_run_dir refuses: --force replaces, --resume continues."""
    assert cli.main(["fit", "image", "--size", "16", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    assert cli.main(["fit", "image", "--out", str(old_run), "--resume", "--steps", "4", "--quiet"]) == 0
    assert cli.main(["fit", "image", "--size", "16", "--out", str(old_run.parent / "new" / "deep"),
                     *IMG_TINY]) == 0


def test_a_folder_named_like_a_preset_is_fitted_and_the_choice_said(tmp_path, monkeypatch, capsys):
    """``rwf fit nerf lego`` beside a folder ./lego fitted the folder without a word (the preset was meant)."""
    import argparse  # noqa: PLC0415

    from rwf_render.nerf_options import resolve_scene  # noqa: PLC0415

    (tmp_path / "lego").mkdir()
    monkeypatch.chdir(tmp_path)
    path, preset, settings = resolve_scene("lego", argparse.Namespace(quiet=False))
    assert path == str((tmp_path / "lego").resolve()) and preset is None and settings == {}
    err = capsys.readouterr().err
    assert "lego: fitting the folder" in err and "not the scene preset of that name" in err
    resolve_scene("./lego", argparse.Namespace(quiet=False))  # a path, plainly: nothing to say
    resolve_scene("lego", argparse.Namespace(quiet=True))
    assert capsys.readouterr().err == ""
