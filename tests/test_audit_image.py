"""Image pipeline audit: transparency that some PNG, EXR and TIFF flavours lost or inverted, animated PNGs read as
their first frame, the exit code of a render that cannot be written; and the metrics and render lattice checked
against their definitions (scikit-image, pixel centres)."""

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.errors import UserError
from rwf_render.imgio import read_image, write_image

IMG_TINY = ["--steps", "2", "--width", "16", "--features", "8", "--eval-every", "1", "--quiet"]


@pytest.mark.parametrize("bits", [8, 16])
def test_png_transparent_colour_is_alpha_at_every_bit_depth(tmp_path, bits):
    """A tRNS chunk (one fully transparent colour) was dropped from 8-bit grey and RGB PNGs (Pillow's fast path)
    but became alpha at 16 bits and in palette PNGs (pypng): a keyed-out background trained as opaque colour."""
    import png

    rgb = np.zeros((3, 4, 3), np.uint16)
    rgb[1, 2] = (1, 2, 3)  # the transparent colour elsewhere is (0, 0, 0)
    rgb[0, 0] = (5, 5, 5)
    with open(tmp_path / "rgb.png", "wb") as f:
        png.Writer(4, 3, bitdepth=bits, greyscale=False, transparent=(0, 0, 0)).write(f, rgb.reshape(3, 12).tolist())
    with open(tmp_path / "grey.png", "wb") as f:
        png.Writer(4, 3, bitdepth=bits, greyscale=True, transparent=0).write(f, rgb[..., 0].tolist())
    for name in ("rgb.png", "grey.png"):
        pixels, info = read_image(tmp_path / name)
        colour = rgb if name == "rgb.png" else rgb[..., :1].repeat(3, axis=2)
        assert pixels.shape == (3, 4, 4) and info["channels"] == 4, name
        assert np.array_equal(pixels[..., 3], (colour != 0).any(axis=2).astype(np.float32)), name
        assert np.allclose(pixels[..., :3] * (2**bits - 1), colour), name


@pytest.mark.parametrize("mode", ["I;16", "P"])
def test_animated_png_is_refused_at_every_bit_depth(tmp_path, mode):
    """Only 8-bit grey/RGB/RGBA APNGs were refused; a 16-bit or palette one was fitted as its first frame."""
    from PIL import Image

    rng = np.random.default_rng(0)
    if mode == "P":
        frames = [Image.fromarray((rng.random((6, 5)) * 255).astype(np.uint8)).convert("P") for _ in range(3)]
    else:
        frames = [Image.fromarray((rng.random((6, 5)) * 65535).astype(np.uint16)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    assert b"acTL" in (tmp_path / "anim.png").read_bytes()
    with pytest.raises(UserError, match="animated PNG"):
        read_image(tmp_path / "anim.png")


@pytest.mark.parametrize("grey", ["Y", "R"])
def test_exr_grey_with_alpha_keeps_its_alpha(tmp_path, grey):
    """An EXR of Y (or R) and A was read as grey alone, as grey + alpha PNGs once were."""
    import OpenEXR

    y = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    a = y[::-1, ::-1].copy()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {grey: y, "A": a}).write(str(tmp_path / "ya.exr"))
    pixels, info = read_image(tmp_path / "ya.exr")
    assert pixels.shape == (3, 4, 4) and info["channels"] == 4
    straight = np.divide(y, a, out=np.zeros_like(y), where=a > 0)  # OpenEXR: Y is premultiplied by A
    assert np.allclose(pixels[..., :3], straight[..., None], rtol=1e-6, atol=0) and np.array_equal(pixels[..., 3], a)


def test_min_is_white_tiff_inverts_its_grey_not_its_alpha(tmp_path):
    """Min-is-white inverted every sample, the alpha included: an opaque grey + alpha TIFF became transparent."""
    import tifffile

    la = np.zeros((2, 3, 2), np.uint8)
    la[..., 0] = [[0, 50, 100], [150, 200, 255]]
    la[..., 1] = [[255, 255, 0], [128, 255, 255]]
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="miniswhite", extrasamples=["unassalpha"])
    pixels, info = read_image(tmp_path / "la.tif")
    assert pixels.shape == (2, 3, 4)
    assert np.allclose(pixels[..., 0] * 255, 255 - la[..., 0]) and np.allclose(pixels[..., 3] * 255, la[..., 1])


def test_tiff_associated_alpha_is_read_as_straight_colour(tmp_path):
    """Premultiplied (associated alpha) TIFF colours were taken as straight colour, darkening every translucent
    pixel; Pillow, the reference here, divides them by alpha."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    alpha = rng.integers(1, 256, (5, 6, 1))
    rgba = np.concatenate([(rng.random((5, 6, 3)) * alpha).astype(np.uint8), alpha.astype(np.uint8)], -1)
    tifffile.imwrite(tmp_path / "assoc.tif", rgba, photometric="rgb", extrasamples=["assocalpha"])
    pixels, _ = read_image(tmp_path / "assoc.tif")
    reference = np.asarray(Image.open(tmp_path / "assoc.tif").convert("RGBA"), np.float32) / 255
    assert np.abs(pixels - reference).max() <= 1.01 / 255
    tifffile.imwrite(tmp_path / "unassoc.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert np.array_equal(np.round(read_image(tmp_path / "unassoc.tif")[0] * 255), rgba)  # straight: unchanged


def test_render_that_cannot_be_written_is_a_machine_failure(tmp_path, capsys, monkeypatch):
    """A full disk or unwritable folder under ``rwf render`` exited 2 (bad input) naming a temporary file; the
    README's contract, and ``rwf fit``, say exit 1 for failures of the machine."""
    from rwf_render import image

    src = tmp_path / "photo.png"
    write_image(src, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(src), "--out", str(run), *IMG_TINY]) == 0
    capsys.readouterr()

    def full(path, pixels, bits=8):
        raise OSError(28, "No space left on device", str(tmp_path / ".render.png.x.tmp"))

    monkeypatch.setattr(image, "write_image", full)
    out = tmp_path / "render.png"
    assert cli.main(["render", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out}: No space left on device" in err and ".tmp" not in err


def test_metrics_split_and_render_lattice_match_their_definitions():
    """Held-out PSNR/SSIM equal scikit-image's on the [1::2, 1::2] lattice (data range 1, channels last), the two
    lattices share no pixel, and a render at --scale k puts k x k sub-pixel centres symmetrically around each
    training pixel centre (no half-pixel shift)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from rwf_render.image import ImageConfig, ImageTask, pixel_coords

    rng = np.random.default_rng(0)
    image = rng.random((19, 14, 3)).astype(np.float32)
    task = ImageTask(image, ImageConfig(), torch.device("cpu"))
    pred = np.clip(image + 0.05 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)

    def model(x):  # the "field" that returns pred at pixel centres
        ij = (x * max(image.shape[:2]) - 0.5).round().long()
        return torch.from_numpy(pred)[ij[:, 1], ij[:, 0]]

    model.eval = lambda: None
    m = task.final_metrics(model)
    test_true, test_pred = image[1::2, 1::2].astype(np.float64), pred[1::2, 1::2].astype(np.float64)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(test_true, test_pred, data_range=1.0), abs=1e-9)
    assert m["ssim"] == pytest.approx(structural_similarity(test_true, test_pred, data_range=1.0, channel_axis=2,
                                                            win_size=7, gaussian_weights=True, sigma=1.5,
                                                            use_sample_covariance=False), abs=1e-9)
    assert not set(map(tuple, task.train_x.tolist())) & set(map(tuple, task.test_x.tolist()))
    base = pixel_coords(19, 14)
    for k in (2, 3):
        fine = pixel_coords(19, 14, k).reshape(19, k, 14, k, 2).mean(dim=(1, 3))
        assert torch.allclose(fine, base, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation):
    """A phone stores a portrait photo sideways and tags it (6: rotate 90 clockwise to view); the image pipeline
    fits the photo as viewers show it. Reference: Pillow's ImageOps.exif_transpose on the same decoded pixels."""
    from PIL import Image, ImageOps

    from rwf_render.image import ImageConfig, load_target

    stored = (np.random.default_rng(orientation).random((6, 10, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=100)
    with Image.open(path) as j:
        expected = np.asarray(ImageOps.exif_transpose(j)).astype(np.float32) / 255
    pixels, info = load_target(ImageConfig(path=str(path), size=64))
    assert np.array_equal(pixels, expected)
    assert (info["height"], info["width"]) == expected.shape[:2]
    assert info.get("exif_orientation", 1) == orientation


@pytest.mark.parametrize("channels", [2, 4])
def test_shrinking_a_transparent_image_keeps_its_edge_colour(tmp_path, channels):
    """--size resized straight-alpha colour unweighted: the transparent black beside an opaque white edge pulled
    the edge's colour to grey (0.26 at alpha 0.26), a dark fringe the fit then learned."""
    from rwf_render.image import ImageConfig, load_target

    img = np.zeros((64, 64, channels), np.float32)
    img[:, :33] = 1.0  # opaque white on the left, transparent black on the right
    write_image(tmp_path / "edge.png", img)
    pixels, _ = load_target(ImageConfig(path=str(tmp_path / "edge.png"), size=16))
    alpha = pixels[..., -1]
    edge = (alpha > 0.01) & (alpha < 0.99)
    assert edge.any()  # the edge column is part-transparent after the shrink
    assert np.allclose(pixels[..., :-1][alpha > 1e-6], 1.0, atol=1e-5)  # white wherever anything is left
    assert alpha[8].sum() == pytest.approx(33 / 4, abs=0.05)  # the coverage is kept: 33 of 64 source columns


def test_a_symlink_loop_as_input_or_output_is_one_message(tmp_path, capsys):
    """Path.resolve() raises RuntimeError on a link that leads back to itself (Python 3.11): a traceback, exit 1."""
    from conftest import one_cli_error  # noqa: PLC0415

    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    write_image(tmp_path / "ok.png", np.full((8, 8, 3), 0.5, np.float32))
    (tmp_path / "out1").symlink_to(tmp_path / "out2")
    (tmp_path / "out2").symlink_to(tmp_path / "out1")
    for argv in (["fit", "image", tmp_path / "a.png", "--out", tmp_path / "run", *IMG_TINY],
                 ["fit", "sdf", tmp_path / "a.png", "--out", tmp_path / "run", "--steps", "2", "--quiet"],
                 ["fit", "image", tmp_path / "ok.png", "--out", tmp_path / "out1", *IMG_TINY]):
        assert "loop" in one_cli_error(capsys, argv).lower()
    assert not (tmp_path / "run").exists()


def test_a_multi_part_exr_is_refused_not_read_in_part(tmp_path, capsys):
    """A stereo pair or a file of render layers fitted its first part without a word (a multi-page TIFF is refused)."""
    import OpenEXR  # noqa: PLC0415

    from conftest import one_cli_error  # noqa: PLC0415

    rng = np.random.default_rng(0)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    parts = [OpenEXR.Part(dict(header), {"RGB": rng.random((6, 8, 3)).astype(np.float32)}, name=n)  # a header each
             for n in ("l", "r")]
    OpenEXR.File(parts).write(str(tmp_path / "pair.exr"))
    with pytest.raises(UserError, match="multi-part EXR .2 parts: l, r"):
        read_image(tmp_path / "pair.exr")
    assert "multi-part" in one_cli_error(capsys, ["fit", "image", tmp_path / "pair.exr", "--out", tmp_path / "run",
                                                  *IMG_TINY])
    assert not (tmp_path / "run").exists()
    OpenEXR.File(header, {"RGB": rng.random((6, 8, 3)).astype(np.float32)}).write(str(tmp_path / "one.exr"))
    assert read_image(tmp_path / "one.exr")[0].shape == (6, 8, 3)
