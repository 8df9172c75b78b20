"""A fit killed before its first config.json (the folder made, the model still being built) or while writing it
left a folder no command would take: its stale temporary counted as a user's file ("holds files but is not a run",
with --force too), and a --compare's empty sub-run folders asked for --force or a --resume that had nothing."""

import numpy as np
import pytest
from conftest import one_cli_error
from test_shape_image_bad_input_more import IMG_TINY

from rwf_render import cli
from rwf_render.imgio import write_image

STALE = ".config.json.ab12cd34.tmp"  # what atomic_write left when killed (no process holds its lock)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "p.png"
    write_image(path, np.random.default_rng(4).random((12, 16, 3)).astype(np.float32))
    return path


def _killed_while_writing_config(folder):
    folder.mkdir(parents=True)
    (folder / ".rwf-readers").touch()
    (folder / STALE).write_text('{"kind": "ima')


@pytest.mark.parametrize("extra", [[], ["--force"]])
def test_a_fit_takes_a_folder_holding_only_its_killed_config_write(image, tmp_path, extra):
    run = tmp_path / "run"
    _killed_while_writing_config(run)
    assert cli.main(["fit", "image", str(image), "--out", str(run), *IMG_TINY, *extra]) == 0
    assert (run / "checkpoint.pt").is_file() and not (run / STALE).exists()


def test_resume_of_a_fit_stopped_before_its_config_says_to_run_it_again(image, tmp_path, capsys):
    run = tmp_path / "run"
    _killed_while_writing_config(run)
    line = one_cli_error(capsys, ["fit", "image", image, "--out", run, "--resume", *IMG_TINY])
    assert "nothing to resume (no config.json; the fit stopped before writing one: run it again without --resume)" \
        in line


def test_a_compare_stopped_before_its_first_config_is_fitted_again_without_force(image, tmp_path):
    root = tmp_path / "cmp"
    _killed_while_writing_config(root / "plain")
    assert cli.main(["fit", "image", str(image), "--out", str(root), "--compare", *IMG_TINY]) == 0
    assert all((root / p / "checkpoint.pt").is_file() for p in ("plain", "wn", "rwf"))
    assert not (root / "plain" / STALE).exists()


def test_a_users_hidden_file_still_keeps_the_folder(image, tmp_path, capsys):
    """Only this toolkit's temporaries go: a hidden file of another name is the user's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".notes").write_text("mine")
    line = one_cli_error(capsys, ["fit", "image", image, "--out", run, *IMG_TINY])
    assert "holds files but is not a run" in line and (run / ".notes").read_text() == "mine"


def test_resume_of_a_compare_stopped_before_its_first_config_says_to_run_it_again(image, tmp_path, capsys):
    root = tmp_path / "cmp"
    (root / "plain").mkdir(parents=True)
    (root / "plain" / ".rwf-readers").touch()
    line = one_cli_error(capsys, ["fit", "image", image, "--out", root, "--compare", "--resume", *IMG_TINY])
    assert "nothing to resume (no plain/config.json; the fit stopped before writing one: run it again" in line
