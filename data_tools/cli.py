"""``rwf data ...``: make, convert and check posed-image datasets.

    rwf data synth MESH OUT            render a Blender-format dataset of a mesh ("demo": a built-in still life)
    rwf data colmap SPARSE IMAGES OUT  COLMAP model (text or binary) -> transforms.json
    rwf data photos IMAGES OUT         structure from motion (pycolmap), then the converter above
    rwf data photos --video F OUT      the same on frames of a video (--fps)
    rwf data llff DIR OUT              poses_bounds.npy -> transforms.json
    rwf data check DIR                 validate a dataset; exit 1 on errors
    rwf data downscale DIR OUT -k K    images and intrinsics downscaled by K

Plugged into ``rwf`` by ``register`` (entry point group ``rwf_render.commands``); ``python -m data_tools`` runs the
same commands stand-alone. Every command validates its inputs before writing, never replaces OUT without
``--force``, and writes OUT all at once (a failure leaves nothing behind).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rwf_render.cli import (Parser, int_in, nonneg_int, option_typed, positive_float, positive_int, seed_number,
                            standalone)
from rwf_render.errors import UserError


def _synth(args) -> int:
    from .synth import demo_mesh, render_dataset  # noqa: PLC0415  (open3d loads only when needed)

    mesh = demo_mesh() if args.mesh == "demo" and not Path("demo").is_file() else args.mesh  # a folder: no mesh
    render_dataset(mesh, args.out, res=args.res, n_views=args.views, n_val=args.val, n_test=args.test,
                   layout=args.layout, radius=args.radius, fov_deg=args.fov, depth=args.depth,
                   background=args.background, supersample=args.supersample, seed=args.seed, force=args.force)
    return 0


def _colmap(args) -> int:
    from .colmap import convert_model  # noqa: PLC0415

    convert_model(args.sparse, args.images, args.out, force=args.force, copy_images=not args.no_copy,
                  orient=not args.no_orient, bounds=args.bounds, depth=args.depth)
    return 0


def _photos(args) -> int:
    from .sfm import photos_to_dataset  # noqa: PLC0415

    if args.video is not None and args.images is not None:
        raise UserError("with --video, give only OUT (rwf data photos --video FILE --fps F OUT)")
    if args.video is None and args.images is None:
        raise UserError("give IMAGES_DIR and OUT (or --video FILE OUT)")
    if args.video is None and option_typed(args, "fps", 2.0):
        raise UserError("--fps is the rate frames are taken from --video; photos have none")
    photos_to_dataset(args.out, images_dir=args.images, video=args.video, fps=args.fps, matching=args.matching,
                      camera_model=args.camera_model, single_camera=not args.camera_per_image,
                      max_image_size=args.max_image_size, min_registered=args.min_registered, force=args.force,
                      seed=args.seed, bounds=args.bounds, depth=args.depth)
    return 0


def _llff(args) -> int:
    from .llff import convert_llff  # noqa: PLC0415

    convert_llff(args.dir, args.out, images=args.images, force=args.force, copy_images=not args.no_copy,
                 orient=not args.no_orient)
    return 0


def _check(args) -> int:
    from .check import check_dataset  # noqa: PLC0415

    errors, _ = check_dataset(args.dir, decode=not args.no_decode)
    return 1 if errors else 0


def _downscale(args) -> int:
    from .downscale import downscale_dataset  # noqa: PLC0415

    downscale_dataset(args.dir, args.out, args.factor, force=args.force)
    return 0


def _fov(text: str) -> float:
    value = positive_float(text)
    if not value < 180:
        raise argparse.ArgumentTypeError(f"a field of view must be between 0 and 180 degrees, got {text}")
    return value


def _fraction(text: str) -> float:
    """A number in [0, 1]. (A ValueError would make argparse print "invalid _fraction value".)"""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text}")
    return value


def _add_point_options(p) -> None:
    """--bounds and --depth: what the converter derives from the points each image observes."""
    p.add_argument("--bounds", action="store_true",
                   help="write each frame's near/far from the distances to the points it observes (as LLFF)")
    p.add_argument("--depth", action="store_true",
                   help="write sparse 16-bit z-depth maps (depth/) of the points each image observes, for "
                        "rwf fit nerf --depth-loss")


def register(subparsers) -> None:
    """Add ``data`` with its commands to an ``rwf`` sub-command parser group."""
    data = subparsers.add_parser("data", help="make, convert and check posed-image datasets",
                                 description=__doc__.split("\n\n")[0].replace("``", ""))
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    force = {"action": "store_true", "help": "replace OUT if it exists"}

    p = sub.add_parser("synth", help="render a Blender-format dataset of a mesh (CPU ray casting)")
    p.add_argument("mesh", metavar="MESH", help='mesh file (obj, ply, glb, ...) or "demo"')
    p.add_argument("out", metavar="OUT")
    p.add_argument("--res", type=int_in(1, 8192, "a number of pixels"), default=200,
                   help="image width and height, 1..8192 (default: 200)")
    p.add_argument("--views", type=positive_int, default=100, help="training views, at least 1 (default: 100)")
    p.add_argument("--val", type=nonneg_int, default=10, help="validation views (default: 10)")
    p.add_argument("--test", type=nonneg_int, default=20, help="test views, an orbit (default: 20)")
    p.add_argument("--layout", choices=["hemisphere", "sphere"], default="hemisphere",
                   help="where train/val cameras are (default: hemisphere, +Z up)")
    p.add_argument("--radius", type=positive_float, default=3.2, help="camera distance; the mesh fits the unit "
                   "sphere (default: 3.2)")
    p.add_argument("--fov", type=_fov, default=40.0, help="horizontal field of view, degrees, 0..180 (default: 40)")
    p.add_argument("--depth", action="store_true", help="also write 16-bit z-depth PNGs")
    p.add_argument("--background", choices=["transparent", "white", "black"], default="transparent",
                   help="transparent: RGBA images; white or black: RGB on that color (default: transparent)")
    p.add_argument("--supersample", type=int_in(1, 16, "a number of rays"), default=2,
                   help="rays per pixel and axis, 1..16 (default: 2)")
    p.add_argument("--seed", type=seed_number, default=0,
                   help="seeds the procedural texture and the random val views, 0..2^32-1 (default: 0)")
    p.add_argument("--force", **force)
    p.set_defaults(func=_synth, oom_hint="try a smaller --res")

    p = sub.add_parser("colmap", help="COLMAP model (text or binary) to transforms.json")
    p.add_argument("sparse", metavar="SPARSE_DIR", help="folder with cameras, images, points3D (.bin or .txt)")
    p.add_argument("images", metavar="IMAGES_DIR")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--no-copy", action="store_true", help="refer to IMAGES_DIR instead of copying the images")
    p.add_argument("--no-orient", action="store_true", help="keep COLMAP's axes (default: mean camera up -> +Z)")
    _add_point_options(p)
    p.add_argument("--force", **force)
    p.set_defaults(func=_colmap)

    p = sub.add_parser("photos", help="structure from motion (pycolmap) on photos or a video, then convert")
    p.add_argument("images", nargs="?", default=None, metavar="IMAGES_DIR",
                   help="folder of photos (left out with --video)")
    p.add_argument("out", metavar="OUT", help="dataset folder to write")
    p.positionals_hint = "give IMAGES_DIR OUT, or --video FILE and OUT only"  # photos --video F OUT2: OUT2 unknown
    p.add_argument("--video", default=None, metavar="FILE",
                   help="take frames of this video instead of photos (then give only OUT)")
    p.add_argument("--fps", type=positive_float, default=2.0,
                   help="frames per second taken from --video (default: 2)")
    p.add_argument("--matching", choices=["exhaustive", "sequential"], default=None,
                   help="which image pairs to match (default: sequential for a video, exhaustive for photos)")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL",
                   choices=["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"],
                   help="COLMAP camera model to estimate (default: SIMPLE_RADIAL)")
    p.add_argument("--camera-per-image", action="store_true", help="one camera per image (zooms, mixed cameras)")
    p.add_argument("--max-image-size", type=positive_int, default=1600,
                   help="SIFT on images downscaled to at most this many pixels per side (default: 1600); with "
                        "--video also the size of the frames written into the dataset")
    p.add_argument("--min-registered", type=_fraction, default=0.5, metavar="FRACTION",
                   help="fail when fewer than this fraction of the images is registered, 0..1 (default: 0.5)")
    p.add_argument("--seed", type=seed_number, default=0,
                   help="seeds COLMAP's random choices, 0..2^32-1 (default: 0)")
    _add_point_options(p)
    p.add_argument("--force", **force)
    p.set_defaults(func=_photos)

    p = sub.add_parser("llff", help="LLFF poses_bounds.npy to transforms.json")
    p.add_argument("dir", metavar="DIR", help="folder with poses_bounds.npy and images/")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--images", default="images", help="image sub-folder (default: images)")
    p.add_argument("--no-copy", action="store_true", help="refer to the images instead of copying them")
    p.add_argument("--no-orient", action="store_true",
                   help="keep the input axes (default: mean camera up -> +Z)")
    p.add_argument("--force", **force)
    p.set_defaults(func=_llff)

    p = sub.add_parser("check", help="validate a dataset and print a report (exit 1 on errors in it; 2 when DIR is "
                                     "no dataset at all)")
    p.add_argument("dir", metavar="DIR", help="dataset folder or transforms JSON")
    p.add_argument("--no-decode", action="store_true", help="read image headers only (faster)")
    p.set_defaults(func=_check)

    p = sub.add_parser("downscale", help="downscale a dataset's images and intrinsics by an integer factor")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--factor", "-k", type=positive_int, required=True,
                   help="integer factor >= 2 (required)")
    p.add_argument("--force", **force)
    p.set_defaults(func=_downscale)


def main(argv: list[str] | None = None) -> int:
    """``python -m data_tools [data] ...``: the ``rwf data`` commands alone (same parsing and error handling as
    ``rwf``; the usage lines name this command, as ``python -m viewer``'s). The ``data`` word of ``rwf data`` may be
    left out: ``python -m data_tools synth ...`` is ``rwf data synth ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if (argv and not argv[0].startswith("-") and argv[0] != "data") or argv[:1] in ([], ["-h"], ["--help"]):
        argv = ["data", *argv]  # an unknown command is then refused, and --help answered, with the data commands
    return standalone(register, "python -m data_tools", "The rwf data commands (rwf data ...): python -m data_tools "
                      "[data] COMMAND, the word data may be left out.", argv,
                      "rwf: interrupted (nothing was written)")

