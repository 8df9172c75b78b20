"""A run inside another run's folder: refused when made, and a --force of the outer run refuses to delete one that
is there (a hunt made base/inner, then `--out base --force` deleted it, checkpoint and all, without a word)."""

import numpy as np
import pytest
from conftest import one_cli_error
from test_shape_image_bad_input_more import IMG_TINY, snapshot

from rwf_render import cli
from rwf_render.imgio import write_image


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "p.png"
    write_image(path, np.random.default_rng(2).random((12, 16, 3)).astype(np.float32))
    return path


def _fit(image, out, *extra):
    assert cli.main(["fit", "image", str(image), "--out", str(out), *IMG_TINY, *extra]) == 0


def test_a_new_run_inside_a_run_is_refused_and_nothing_made(image, tmp_path, capsys):
    base = tmp_path / "base"
    _fit(image, base)
    before = snapshot(base)
    for out in (base / "inner", base / "deeper" / "inner"):
        line = one_cli_error(capsys, ["fit", "image", image, "--out", out, *IMG_TINY])
        assert f"{out}: lies inside the run {base.resolve()}, whose --force would delete it" in line
        assert not (base / "inner").exists() and not (base / "deeper").exists()
    assert snapshot(base) == before


def test_force_refuses_to_delete_a_run_inside_and_keeps_both(image, tmp_path, capsys):
    base = tmp_path / "base"
    _fit(image, base)
    inner = base / "keep" / "inner"
    inner.parent.mkdir()
    (inner.parent / "notes.txt").write_text("mine")
    cfg = (base / "config.json").read_text()  # a run put there by hand (copied in, or made before this check)
    inner.mkdir()
    (inner / "config.json").write_text(cfg)
    before = snapshot(base), snapshot(inner)
    line = one_cli_error(capsys, ["fit", "image", image, "--out", base, "--force", *IMG_TINY])
    assert f"{base}: holds another run, {inner}, which --force would delete with it" in line
    assert (snapshot(base), snapshot(inner)) == before


def test_a_compare_and_a_run_beside_another_still_go(image, tmp_path):
    """A --compare's sub-runs lie in its folder, which is no run; its --force replaces them; a sibling is no child."""
    _fit(image, tmp_path / "a")
    _fit(image, tmp_path / "ab")
    cmp = tmp_path / "cmp"
    _fit(image, cmp, "--compare")
    _fit(image, cmp, "--compare", "--force")
    assert all((cmp / p / "checkpoint.pt").is_file() for p in ("plain", "wn", "rwf"))
    _fit(image, tmp_path / "a", "--force")


def test_a_full_disk_while_force_sets_the_old_run_aside_leaves_it_whole_and_no_hidden_folder(image, tmp_path, capsys,
                                                                                              monkeypatch):
    """The mark of the set-aside folder was written outside the clean-up: on a full disk each --force left one more
    hidden folder (with an empty mark nothing settled), and the error named no file."""
    import errno
    import pathlib

    from rwf_render import replacing

    base = tmp_path / "base"
    _fit(image, base)
    before = snapshot(base)
    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(replacing.REPLACED_MARK):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    assert cli.main(["fit", "image", str(image), "--out", str(base), "--force", *IMG_TINY]) == 1
    err = capsys.readouterr().err
    assert f"{base}: No space left on device" in err, err
    monkeypatch.undo()
    assert snapshot(base) == before
    assert [p.name for p in base.iterdir() if p.name.startswith(replacing.REPLACED_PREFIX)] == []


def test_a_hidden_folder_with_an_empty_mark_is_put_back(image, tmp_path):
    """What an older version left after such a failure: settled by the next fit there."""
    from rwf_render import replacing

    base = tmp_path / "base"
    _fit(image, base)
    held = base / f"{replacing.REPLACED_PREFIX}abcd1234"
    held.mkdir()
    (held / replacing.REPLACED_MARK).write_text("")
    (base / "metrics.json").rename(held / "metrics.json")
    _fit(image, base, "--resume", "--steps", "3")
    assert (base / "metrics.json").is_file() and not held.exists()
