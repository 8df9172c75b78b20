"""``rwf eval`` of a NeRF run without a terminal (a log, a CI job, nohup) says each view as it is scored: a 200-view
test split ran half an hour on a CPU without a word, since the progress bar shows only on a terminal."""

import json
import re

from conftest import random_views_scene
from rwf_render import cli


def test_eval_without_a_terminal_writes_a_line_per_view_and_quiet_none(tmp_path, capsys):
    scene = random_views_scene(tmp_path / "scene", {"train": 3, "test": 2})
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(scene), "--out", str(run), "--steps", "2", "--grid-resolution", "16",
                     "--width", "16", "--features", "8", "--eval-images", "1", "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0  # stderr is captured here: no terminal
    err = capsys.readouterr().err
    views = json.loads((run / "metrics.json").read_text())["views"]
    got = re.findall(r"^rwf: test view (\d)/2 \((.+)\): ([\d.]+) dB, \d+ s so far$", err, flags=re.M)
    assert [(int(k), name) for k, name, _ in got] == [(1, views[0]["image"]), (2, views[1]["image"])], err
    assert [round(float(db), 2) for *_, db in got] == [round(v["psnr"], 2) for v in views]
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    assert "test view" not in capsys.readouterr().err


def test_eval_on_a_terminal_shows_the_bar_not_the_lines(tmp_path, monkeypatch):
    import io  # noqa: PLC0415
    import sys  # noqa: PLC0415

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    scene = random_views_scene(tmp_path / "scene", {"train": 3, "test": 2})
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(scene), "--out", str(run), "--steps", "2", "--grid-resolution", "16",
                     "--width", "16", "--features", "8", "--eval-images", "1", "--quiet", "--device", "cpu"]) == 0
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["eval", str(run)]) == 0
    shown = term.getvalue()
    assert "test views" in shown and "rwf: test view 1/2" not in shown  # tqdm's bar, then no lines
