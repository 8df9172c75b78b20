"""A truncated checkpoint is said as such (it read "cannot load checkpoint (OSError: [Errno 22] Invalid argument)")."""

import numpy as np
from conftest import one_cli_error
from test_shape_image_bad_input_more import IMG_TINY

from rwf_render import cli
from rwf_render.imgio import write_image


def test_a_truncated_checkpoint_is_one_line_naming_the_likely_cause(tmp_path, capsys):
    image = tmp_path / "p.png"
    write_image(image, np.random.default_rng(3).random((12, 16, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(image), "--out", str(run), *IMG_TINY]) == 0
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for argv in (["eval", run], ["render", run, "--out", tmp_path / "x.png"]):
        line = one_cli_error(capsys, argv)
        assert f"{ckpt}: cannot load checkpoint, a damaged or truncated file?" in line, line
    assert not (tmp_path / "x.png").exists()
