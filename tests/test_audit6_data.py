"""Sixth audit of the NeRF data path, with inputs real users bring: Blender paths without an extension naming EXR or
upper-case files, datasets with no focal length at all (refused; a vertical one alone is read as fx = fy:
test_audit6_data2.py), masks that are cut-out images or carry alpha, COLMAP text models saved with a byte-order mark,
palette PNGs with a transparent colour, 1-bit masks and EXR frames through ``rwf data downscale``, BMP / WebP images
given to the converters, and PNGs pypng left open.

Rule: odd but valid input loads as it means (checked against the camera it describes); bad input is one line and
exit 2 (or a ``rwf data check`` error), with nothing written.
"""

import gc
import json
import math
import warnings

import numpy as np
import pytest
import torch

from data_tools.check import check_dataset
from data_tools.cli import main
from data_tools.colmap_io import read_model, write_model
from data_tools.common import load_image
from data_tools.downscale import downscale_dataset
from rwf_render.cameras import focal_from_fov, look_at, pixel_rays
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import read_image, write_image
from rwf_render.nerf_data import load_split

from test_data_tools_bad_input_more import _fails_cleanly, _llff  # noqa: E402  (tests/ is on sys.path under pytest)
from test_data_tools_colmap import _synthetic_model  # noqa: E402

W, H = 16, 12


def _pose(i: int, n: int = 3) -> list:
    """A camera on a circle of radius 3 around the origin, looking at it (OpenGL c2w, 4x4)."""
    a = 2 * math.pi * i / n
    eye = torch.tensor([3 * math.cos(a), 3 * math.sin(a), 0.5], dtype=torch.float64)
    return look_at(eye, torch.zeros(3, dtype=torch.float64)).tolist() + [[0.0, 0.0, 0.0, 1.0]]


def _blender(root, names, top, write=None):
    """A Blender-layout train split: one frame per entry of ``names`` (written as ``./train/<name>``, no extension),
    each image written by ``write(path)`` or as a random 16x12 PNG ``<name>.png``."""
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = []
    for i, name in enumerate(names):
        if write is None:
            write_image(root / "train" / f"{name}.png", rng.random((H, W, 3)).astype(np.float32))
        frames.append({"file_path": f"./train/{name.split('.')[0]}", "transform_matrix": _pose(i, len(names))})
    (root / "transforms_train.json").write_text(json.dumps({**top, "frames": frames}))
    return root


# -- transforms.json -----------------------------------------------------------------------------------------------
def test_a_path_without_extension_finds_exr_tiff_and_upper_case_images(tmp_path):
    """``./train/r_0`` is how Blender exporters write every frame; an EXR or TIFF render, or a camera's R_1.PNG,
    used to be looked for only as .png/.jpg/.jpeg, so the frame was skipped as missing (and with every frame so,
    the split refused: 'no frame with an existing image')."""
    rng = np.random.default_rng(1)
    (tmp_path / "train").mkdir()
    pixels = {"r_0.exr": rng.random((H, W, 4)).astype(np.float32), "r_1.tiff": rng.random((H, W, 3)).astype(np.float32),
              "r_2.PNG": rng.random((H, W, 3)).astype(np.float32)}
    for name, px in pixels.items():
        write_image(tmp_path / "train" / name, px)
    frames = [{"file_path": f"./train/r_{i}", "transform_matrix": _pose(i)} for i in range(3)]
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no frame skipped
        tf = load_transforms(tmp_path, "train")
    assert [p.name for p in tf.image_paths] == list(pixels)
    train = load_split(tmp_path, "train")
    assert np.allclose(train.image(0).numpy(), np.clip(pixels["r_0.exr"], 0, 1), atol=0.5 / 255 + 1e-6)
    errors, _ = check_dataset(tmp_path, log=lambda *a: None)
    assert errors == []


def test_a_horizontal_angle_with_a_vertical_one_gives_each_axis_its_own_focal(tmp_path):
    """Checked against the pinhole the angles describe: the ray through the middle of the top edge is
    camera_angle_y / 2 above the optical axis, the one through the middle of the left edge camera_angle_x / 2."""
    ax, ay = 0.9, 0.7
    _blender(tmp_path, ["r_0", "r_1"], {"camera_angle_x": ax, "camera_angle_y": ay})
    cams = load_transforms(tmp_path, "train").cameras
    assert math.isclose(float(cams.fx[0]), focal_from_fov(ax, W))
    assert math.isclose(float(cams.fy[0]), focal_from_fov(ay, H))
    _, d = pixel_rays(cams[0], torch.tensor([[W / 2, 0.0], [0.0, H / 2]], dtype=torch.float64))
    forward, up, right = -cams.c2w[0, :, 2], cams.c2w[0, :, 1], cams.c2w[0, :, 0]
    assert math.isclose(float(torch.atan2(d[0] @ up, d[0] @ forward)), ay / 2, rel_tol=1e-9)
    assert math.isclose(float(torch.atan2(-(d[1] @ right), d[1] @ forward)), ax / 2, rel_tol=1e-9)


def test_a_dataset_with_no_focal_length_at_all_is_still_refused(tmp_path):
    _blender(tmp_path, ["r_0"], {})
    with pytest.raises(UserError, match=r"no focal length \(fl_x, fl_y, camera_angle_x or camera_angle_y\)$"):
        load_transforms(tmp_path, "train")


# -- masks ---------------------------------------------------------------------------------------------------------
def _masked(tmp_path, mask: np.ndarray, name: str = "m.png"):
    """A single-file dataset of three 16x12 frames whose first frame has ``mask`` as its mask_path."""
    rng = np.random.default_rng(2)
    frames = []
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", rng.random((H, W, 3)).astype(np.float32))
        frames.append({"file_path": f"img{i}.png", "transform_matrix": _pose(i)})
    write_image(tmp_path / name, mask)
    frames[0]["mask_path"] = name
    (tmp_path / "transforms.json").write_text(json.dumps({
        "fl_x": 14.0, "w": W, "h": H, "aabb_scale": 1, "train_filenames": [f"img{i}.png" for i in range(3)],
        "frames": frames}))
    return tmp_path


def test_a_colour_image_given_as_a_mask_is_refused_by_fit_and_check(tmp_path):
    """A cut-out photo (RGBA, the object in colour) named as its own mask used to be read by its red channel: a
    mask that weighs pixels by how red they are, without a word."""
    rng = np.random.default_rng(3)
    cutout = np.concatenate([rng.random((H, W, 3)), np.ones((H, W, 1))], -1).astype(np.float32)
    _masked(tmp_path, cutout)
    with pytest.raises(UserError, match="a mask must be grey"):
        load_split(tmp_path, "train")
    errors, _ = check_dataset(tmp_path, log=lambda *a: None)
    assert len(errors) == 1 and "mask" in errors[0] and "a mask must be grey" in errors[0], errors


def test_a_masks_alpha_leaves_its_transparent_pixels_out(tmp_path):
    """A white RGBA mask whose left half is transparent (an editor's eraser keeps the white under it) leaves the
    left half out; it used to be read by its red channel alone, so every pixel was used. Grey JPEG-like noise in the
    colour channels (within the tolerance) is still a grey mask."""
    mask = np.ones((H, W, 4), np.float32)
    mask[:, : W // 2, 3] = 0
    mask[..., 1] -= 0.03  # green a little off, as a JPEG's chroma would leave it
    _masked(tmp_path, mask)
    train = load_split(tmp_path, "train")
    first = train.masks[: W * H].reshape(H, W)
    assert (first[:, : W // 2] == 0).all() and (first[:, W // 2:] == 255).all()
    assert (train.masks[W * H:] == 255).all()  # the frames without a mask use every pixel
    errors, _ = check_dataset(tmp_path, log=lambda *a: None)
    assert errors == []


def test_a_grey_mask_reads_as_before(tmp_path):
    mask = np.zeros((H, W, 1), np.float32)
    mask[:6] = 1
    _masked(tmp_path, mask)
    first = load_split(tmp_path, "train").masks[: W * H].reshape(H, W)
    assert (first[:6] == 255).all() and (first[6:] == 0).all()


# -- images --------------------------------------------------------------------------------------------------------
def test_reading_pngs_through_pypng_leaves_no_file_open(tmp_path):
    """16-bit, palette and 1-bit PNGs are decoded by pypng, which, given a file name, left the file open: one
    ResourceWarning per image (an error under ``-W error``, noise in every fit of a 16-bit dataset)."""
    from PIL import Image  # noqa: PLC0415

    write_image(tmp_path / "a.png", np.full((4, 5, 3), 0.5, np.float32), bits=16)
    _palette_with_transparency(tmp_path / "b.png")
    Image.fromarray(np.eye(4, 5, dtype=bool)).save(tmp_path / "c.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("a.png", "b.png", "c.png"):
            read_image(tmp_path / name)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


# -- data tools ----------------------------------------------------------------------------------------------------
def test_colmap_text_model_saved_with_a_byte_order_mark_reads(tmp_path):
    """A text model edited in a Windows editor starts each file with a UTF-8 byte-order mark: it used to be refused
    as malformed (the mark read into the first camera's id); image names in UTF-8 read as such, whatever the
    locale."""
    model = _synthetic_model(tmp_path)
    first = min(model.images)
    model.images[first].name = "Küche é.png"
    write_model(model, tmp_path / "bom", "txt")
    for f in (tmp_path / "bom").glob("*.txt"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    again = read_model(tmp_path / "bom")
    assert sorted(again.cameras) == sorted(model.cameras) and again.images[first].name == "Küche é.png"
    assert all(np.allclose(again.images[i].qvec, model.images[i].qvec) for i in model.images)


def _palette_with_transparency(path, h=4, w=6):
    """A palette PNG whose index 0 is a transparent colour (tRNS), left half transparent: colour (200, 10, 10)."""
    from PIL import Image  # noqa: PLC0415

    idx = np.ones((h, w), np.uint8)
    idx[:, : w // 2] = 0
    im = Image.fromarray(idx, "P")
    im.putpalette([200, 10, 10, 20, 200, 20] + [0] * 762)
    im.save(path, transparency=0)


def test_downscale_keeps_a_palettes_transparency_exr_frames_and_a_1_bit_masks_coverage(tmp_path):
    """Three images ``rwf data downscale`` got wrong: a palette PNG with a transparent colour lost its alpha (the
    transparent background came out opaque red, trained as scene colour); an EXR frame failed ('could not find a
    backend'); a 1-bit mask came out 1-bit, every block with any used pixel wholly used. Now each is the block mean
    of what the NeRF loader reads from the original."""
    from PIL import Image  # noqa: PLC0415

    ds = tmp_path / "ds"
    ds.mkdir()
    _palette_with_transparency(ds / "pal.png")
    rng = np.random.default_rng(4)
    write_image(ds / "hdr.exr", rng.random((4, 6, 4)).astype(np.float32))
    Image.fromarray(np.tile([True, False, False, False, True, True], (4, 1))).save(ds / "m.png")
    frames = [{"file_path": "pal.png", "transform_matrix": _pose(0), "mask_path": "m.png"},
              {"file_path": "hdr.exr", "transform_matrix": _pose(1)}]
    (ds / "transforms.json").write_text(json.dumps({"fl_x": 5.0, "w": 6, "h": 4, "frames": frames}))
    downscale_dataset(ds, tmp_path / "half", 2, log=lambda *a: None)

    def block_mean(a):  # premultiplied for RGBA, as both downscalers do
        a = a.astype(np.float64)
        if a.shape[-1] == 4:
            a = np.concatenate([a[..., :3] * a[..., 3:], a[..., 3:]], -1)
        m = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, -1).mean(axis=(1, 3))
        if m.shape[-1] == 4:
            m[..., :3] /= np.maximum(m[..., 3:], 1e-12)
        return m

    for name, tol in (("pal.png", 1 / 255), ("hdr.exr", 1e-5), ("m.png", 1 / 255)):
        src, out = read_image(ds / name)[0], read_image(tmp_path / "half" / name)[0]
        assert out.shape == (2, 3, src.shape[2]), (name, out.shape)
        expect = block_mean(src)
        if src.shape[2] == 4:  # colour where the block is wholly transparent is undefined
            seen = expect[..., 3] > 0
            assert np.allclose(out[..., 3], expect[..., 3], atol=tol)
            assert np.allclose(out[seen][:, :3], expect[seen][:, :3], atol=tol), name
        else:
            assert np.allclose(out, expect, atol=tol), name
    assert read_image(tmp_path / "half" / "pal.png")[0][..., 3].min() == 0  # the transparency is there
    assert np.isclose(read_image(tmp_path / "half" / "m.png")[0][0, 0, 0], 0.5, atol=1 / 255)  # half a block used
    assert load_image(ds / "pal.png").shape == (4, 6, 4)


def test_llff_refuses_images_rwf_fit_cannot_read_and_writes_nothing(tmp_path, capsys):
    """BMP and WebP files are listed as images (COLMAP reads them), so the converter wrote a dataset whose every
    frame ``rwf fit`` then refused ('not a PNG, JPEG, TIFF or EXR image'); now the conversion is refused first."""
    from PIL import Image  # noqa: PLC0415

    _llff(tmp_path)
    for p in sorted((tmp_path / "images").glob("*.png")):
        Image.open(p).save(p.with_suffix(".bmp"))
        p.unlink()
    _fails_cleanly(capsys, ["data", "llff", str(tmp_path), str(tmp_path.parent / f"{tmp_path.name}_out")],
                   "are not PNG, JPEG, TIFF or EXR (first: 0.bmp)", tmp_path)
    assert not (tmp_path.parent / f"{tmp_path.name}_out").exists()


def test_colmap_refuses_an_image_that_is_not_what_its_name_says(tmp_path, capsys):
    """A model's image that is a WebP file named .png (a phone export renamed) converted fine and failed at fit."""
    from PIL import Image  # noqa: PLC0415

    model = _synthetic_model(tmp_path)
    name = model.images[min(model.images)].name
    Image.open(tmp_path / "images" / name).save(tmp_path / "images" / name, format="WEBP")
    _fails_cleanly(capsys, ["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"),
                            str(tmp_path.parent / f"{tmp_path.name}_out")], f"(first: {name})", tmp_path)
    assert not (tmp_path.parent / f"{tmp_path.name}_out").exists()


def test_downscale_reads_a_cmyk_jpeg_as_rgb_and_keeps_jpeg_quality(tmp_path):
    """A CMYK JPEG (print workflows, some scanners) was read as four channels, taken for RGBA and then failed to
    save ('cannot write mode RGBA as JPEG', exit 1 naming an OSError); it is RGB, as ``rwf fit`` reads it. JPEGs were
    also written at Pillow's default quality 75 (quantization steps up to ~60 levels); now 95 as write_image."""
    from PIL import Image  # noqa: PLC0415

    y, x = np.mgrid[0:48, 0:64]
    smooth = np.dstack([128 + 100 * np.sin(x / 9.0), 128 + 100 * np.cos(y / 7.0), 60 + 2 * x + y]).astype(np.uint8)
    ds = tmp_path / "ds"
    ds.mkdir()
    Image.fromarray(smooth).convert("CMYK").save(ds / "a.jpg", quality=100)
    (ds / "transforms.json").write_text(json.dumps({"fl_x": 50.0, "w": 64, "h": 48, "frames": [
        {"file_path": "a.jpg", "transform_matrix": _pose(0)}]}))
    downscale_dataset(ds, tmp_path / "half", 2, log=lambda *a: None)
    src = read_image(ds / "a.jpg")[0].astype(np.float64).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    out, info = read_image(tmp_path / "half" / "a.jpg")
    assert info["channels"] == 3 and out.shape == (24, 32, 3)
    assert np.abs(out - src).mean() < 0.02, np.abs(out - src).mean()
    with Image.open(tmp_path / "half" / "a.jpg") as im:
        assert max(max(t) for t in im.quantization.values()) <= 16, im.quantization  # quality 75: up to ~60


def test_llff_ignores_the_resource_forks_macos_leaves_beside_photos(tmp_path):
    """A folder copied from a Mac to a FAT / exFAT drive holds ``._0.png`` beside ``0.png`` (AppleDouble metadata,
    not an image): they were counted as images, so a good dataset was refused ('6 images but poses_bounds.npy has
    3 rows')."""
    _llff(tmp_path)
    for p in sorted((tmp_path / "images").glob("*.png")):
        (p.parent / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    out = tmp_path.parent / f"{tmp_path.name}_out"
    assert main(["data", "llff", str(tmp_path), str(out)]) == 0
    tf = load_transforms(out, "all")
    assert [p.name for p in tf.image_paths] == ["0.png", "1.png", "2.png"]


def test_names_with_accents_find_files_made_on_macos(tmp_path):
    """macOS stores ``é`` decomposed (NFD: e + combining accent), JSON writers compose it (NFC); on Linux the two
    are different names, so every frame of a dataset made on a Mac with accented names was skipped as missing (and
    its masks refused as missing). Either form now finds the file, with or without its extension."""
    import unicodedata  # noqa: PLC0415

    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    rng = np.random.default_rng(5)
    frames = []
    for i in range(3):
        write_image(tmp_path / f"{nfd}{i}.png", rng.random((H, W, 3)).astype(np.float32))
        frames.append({"file_path": f"{nfc}{i}" + (".png" if i else ""), "transform_matrix": _pose(i)})
    write_image(tmp_path / f"m{nfd}.png", np.ones((H, W, 1), np.float32))
    frames[1]["mask_path"] = f"m{nfc}.png"
    (tmp_path / "transforms.json").write_text(json.dumps({
        "fl_x": 14.0, "w": W, "h": H, "train_filenames": [f["file_path"] for f in frames], "frames": frames}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no frame skipped
        train = load_split(tmp_path, "train")
    assert [p.name for p in train.paths] == [f"{nfd}{i}.png" for i in range(3)]
    assert train.masks is not None
    errors, warns = check_dataset(tmp_path, log=lambda *a: None)
    assert errors == [] and not [w for w in warns if "missing" in w], (errors, warns)
