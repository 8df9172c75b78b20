"""``rwf render RUN --scale S`` of a NeRF run: any output resolution, larger than the fit's too (a fit at --downscale
8 could never give full-size test renders: --scale was refused and --downscale only divides), over the same field
of view."""

import numpy as np
import pytest
import torch

from conftest import one_cli_error
from rwf_render import cli
from rwf_render.cameras import Cameras, project
from rwf_render.imgio import read_image
from rwf_render.metrics import psnr
from rwf_render.nerf_outputs import resized_cameras


def _cams(width, height):
    c2w = torch.eye(4)[:3].unsqueeze(0).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.3, -0.2, 0.1])
    return Cameras.create(c2w, fx=torch.tensor([30.0, 41.0]), fy=torch.tensor([31.0, 40.0]),
                          cx=torch.tensor([width / 2, width / 2 - 3.3]), cy=torch.tensor([height / 2, height / 2 + 1.7]),
                          width=width, height=height, model=["PINHOLE", "OPENCV"],
                          dist=torch.tensor([[0.0] * 6, [0.05, -0.01, 0.0, 0.0, 0.001, -0.002]]))


@pytest.mark.parametrize("factor", [2.0, 3.0, 0.5, 1.5])
def test_resized_cameras_see_every_point_at_the_scaled_pixel(factor):
    cams = _cams(40, 24)
    big = resized_cameras(cams, factor)
    assert big.width.tolist() == [round(40 * factor)] * 2 and big.height.tolist() == [round(24 * factor)] * 2
    points = torch.tensor([[0.1, 0.05, -2.0], [-0.3, 0.2, -3.0], [0.0, 0.0, -1.0]])  # OpenGL: in front is -z
    uv, _ = project(points, cams)
    uv2, _ = project(points, big)
    assert torch.allclose(uv2, uv * factor, atol=1e-4)
    assert resized_cameras(cams, 1.0) is cams
    tiny = resized_cameras(cams, 1e-3)  # at least one pixel, and a focal length that is not zero
    assert tiny.width.tolist() == [1, 1] and tiny.height.tolist() == [1, 1] and bool((tiny.fx > 0).all())


def test_an_odd_size_keeps_the_field_of_view():
    cams = _cams(25, 13)
    half = resized_cameras(cams, 0.5)
    w, h = int(half.width[0]), int(half.height[0])
    assert (w, h) in {(12, 6), (13, 7), (12, 7), (13, 6)}
    assert torch.allclose(half.width / half.fx, cams.width / cams.fx) and torch.allclose(half.cx / half.width,
                                                                                         cams.cx / cams.width)


def test_a_render_at_twice_the_resolution_is_the_fits_view_in_more_pixels(still_life_run, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["render", str(still_life_run), "--split", "test", "--out", str(one), "--quiet"]) == 0
    assert cli.main(["render", str(still_life_run), "--split", "test", "--scale", "2", "--out", str(two),
                     "--quiet"]) == 0
    a, b = read_image(one / "rgb_0000.png")[0][..., :3], read_image(two / "rgb_0000.png")[0][..., :3]
    assert b.shape[:2] == (2 * a.shape[0], 2 * a.shape[1])
    pooled = b.reshape(a.shape[0], 2, a.shape[1], 2, 3).mean(axis=(1, 3))
    assert psnr(torch.from_numpy(pooled), torch.from_numpy(a)) > 25.0
    shifted = np.roll(pooled, 2, axis=1)  # what a principal point off by 2 pixels would give: far lower
    assert psnr(torch.from_numpy(shifted), torch.from_numpy(a)) < psnr(torch.from_numpy(pooled), torch.from_numpy(a)) - 5


def test_a_scale_past_the_pixel_limit_is_refused_before_any_work(still_life_run, tmp_path, capsys):
    line = one_cli_error(capsys, ["render", still_life_run, "--split", "test", "--scale", "5000", "--out",
                                  tmp_path / "o"])
    assert "--scale 5000:" in line and "use a smaller --scale" in line and not (tmp_path / "o").exists()
