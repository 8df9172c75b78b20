"""A render's folder of frames and videos, written whole or not at all (NeRF and SDF runs' ``rwf render``).

Every frame is written into a hidden staging folder inside ``out`` (above it, while ``out`` does not exist); only
when all are written are they moved in, and the names they replace listed in ``out``'s MANIFEST. A render that fails
or is interrupted half-way leaves ``out`` as it was (absent, if it was); frames of an earlier, longer render there
(listed in its MANIFEST) do not linger beside the new ones; a file of the user's named like a frame is replaced only
with ``--force``. Videos are streamed to ffmpeg one frame at a time (:class:`VideoWriter`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import UserError, out_of_memory
from .imgio import write_image
from .locks import staging_dir, sweep_stale
from .rundir import read_json, refuse_among_inputs, refuse_dangling_link, temp_prefix, write_json
from .signals import uninterrupted

def depth_colors(depth: np.ndarray, opacity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) float32 turbo colours on [lo, hi]; black where opacity < 0.5. Turbo is a table of
    256 colours, looked up here block by block of rows (matplotlib's call made float64 RGBA copies of the frame: 70
    bytes a pixel)."""
    import matplotlib  # noqa: PLC0415

    turbo = matplotlib.colormaps["turbo"]
    lut = turbo(np.arange(turbo.N))[:, :3].astype(np.float32)
    out = np.empty((*depth.shape, 3), np.float32)
    rows = max(1, (1 << 18) // max(depth.shape[1], 1))
    for r in range(0, depth.shape[0], rows):
        x = np.clip(np.nan_to_num((depth[r:r + rows].astype(np.float64) - lo) / max(hi - lo, 1e-9)), 0, 1)
        index = np.minimum((x * turbo.N).astype(np.int64), turbo.N - 1)  # matplotlib's rule for a float in [0, 1]
        out[r:r + rows] = np.where(opacity[r:r + rows, :, None] >= 0.5, lut[index], 0.0)
    return out


FRAME_KINDS = ("rgb_{:04d}.png", "depth_{:04d}.exr", "depth_{:04d}.png")
"""the files every frame of a render writes (a NeRF render's --opacity and --rgba add theirs)"""


def frame_names(count: int, kinds=FRAME_KINDS, video: bool = False) -> set[str]:
    """The files a render of ``count`` frames writes: each of ``kinds`` per frame, and rgb.mp4 and depth.mp4 with a
    ``video``."""
    return {kind.format(i) for i in range(count) for kind in kinds} | ({"rgb.mp4", "depth.mp4"} if video else set())


def depth_span(depth: np.ndarray, solid: np.ndarray) -> tuple[float, float]:
    """The colour range of a render's depth previews: the 1st and 99th percentiles of ``depth`` where ``solid``, taken
    from the first frame for the whole sequence, so that videos do not flicker; (0, 1) where nothing is solid."""
    hit = depth[solid]
    return (float(np.percentile(hit, 1)), float(np.percentile(hit, 99))) if hit.size else (0.0, 1.0)


FRAME_PATTERNS = ("rgb_[0-9][0-9][0-9][0-9].png", "depth_[0-9][0-9][0-9][0-9].exr", "depth_[0-9][0-9][0-9][0-9].png",
                  "opacity_[0-9][0-9][0-9][0-9].png", "rgba_[0-9][0-9][0-9][0-9].png", "rgb.mp4", "depth.mp4")
MANIFEST = ".rwf_render.json"
"""the names a render wrote into its folder: the next render there removes those it does not write again, and
nothing else (a folder of the user's own files named like frames keeps them)"""


MEDIA_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".png", ".jpg", ".jpeg", ".exr", ".tif",
                            ".tiff"})
"""an ``--out`` ending so is taken for a file, which a render (a folder of frames) would not write"""


def check_out_option(out: str | None, inputs, what: str, inputs_are: str = "dataset") -> None:
    """Refuse an ``--out`` among the run's inputs (its ``inputs_are``: dataset, source), or named like a media file
    (``what`` writes a folder)."""
    if not out:
        return
    refuse_among_inputs(Path(out), inputs, inputs_are)
    suffix = Path(out).suffix.lower()
    if suffix in MEDIA_SUFFIXES and not Path(out).is_dir():  # it would become a folder of that name
        raise UserError(f"{out}: --out names the folder of {what}'s frames (and of rgb.mp4 and depth.mp4 with "
                        f"--video), not a {suffix} file; give a folder")


def check_frame_folder(out: Path, names: set[str], fps: float | None = None, force: bool = False) -> None:
    """The refusals of :func:`write_frames` (``out`` a file, or below one, or not writable; a file of the user's
    among ``names`` without ``force``; no ffmpeg for a video), to say before a model loads."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out names the folder of the frames)")
    if fps is not None:
        _need_ffmpeg()
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # e.g. on a read-only file system, even for root
        raise UserError(f"{out}: cannot write the frames there (folder not writable)")
    if out.is_dir() and not force:
        _refuse_others_files(out, names)
    refuse_dangling_link(out)
    parent = out.parent
    while not out.is_dir() and not parent.is_dir() and parent != parent.parent:
        if parent.exists():
            raise UserError(f"{out}: {parent} exists and is not a folder")
        parent = parent.parent


def write_frames(out: Path, count: int, frame_fn, names: set[str], fps: float | None = None, force: bool = False,
                 quiet: bool = False) -> None:
    """Write ``count`` frames into the folder ``out``, whole or not at all.

    frame_fn(i) -> (files, clips): files a list of (name, pixels, bits) written as images, clips a {name.mp4:
    (H, W, 3) pixels} of this frame's picture in each video. ``names``: every file the render writes (checked before
    the first frame against the user's own files in ``out``). ``fps``: the videos' frame rate (None: no video)."""
    check_frame_folder(out, names, fps, force)
    parent = out if out.is_dir() else out.parent
    # staging goes in ``out`` when it exists (it may be a mount point: frames moved in from the folder above would
    # cross file systems), else in the nearest existing folder above it; ``out`` and the missing folders above it
    # are made only once every frame is rendered, so an interrupted render leaves no empty folder behind either
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    sweep_stale(parent, temp_prefix(out.name), ".tmp")  # what a render killed with -9 left
    if parent == out and out.parent.is_dir():  # ... also beside ``out``, where it staged before ``out`` existed
        sweep_stale(out.parent, temp_prefix(out.name), ".tmp")
    try:
        staging, held = staging_dir(temp_prefix(out.name), ".tmp", parent)
    except OSError as e:  # a folder the user cannot write to, as fit's --out (the staging name would only confuse)
        raise UserError(f"{out}: cannot write the frames there ({e.strerror or e})") from None
    videos = {}
    try:
        from tqdm import tqdm  # noqa: PLC0415

        for i in tqdm(range(count), desc=f"{out}", unit="frame", disable=quiet, dynamic_ncols=True):
            files, clips = frame_fn(i)
            for file, pixels, bits in files:
                with _writing(out / file):
                    write_image(staging / file, pixels, bits)
            if fps is not None:  # streamed to ffmpeg: memory holds one frame, whatever the length of the video
                for file, pixels in clips.items():
                    with _writing(out / file):
                        if file not in videos:
                            videos[file] = VideoWriter(staging / file, pixels.shape[1], pixels.shape[0], fps)
                        videos[file].append(pixels)
        for file in list(videos):
            with _writing(out / file):
                videos.pop(file).close()
        new = {p.name for p in staging.iterdir()}
        with uninterrupted():  # a Ctrl+C here waits for the frames to be in place (half of them, unlisted, lingered)
            with _writing(out):
                out.mkdir(parents=True, exist_ok=True)
            for name_ in sorted(new):
                with _writing(out / name_):
                    (staging / name_).replace(out / name_)
            for old in _earlier_render(out) - new:  # an earlier render's frames and videos not replaced by this one
                (out / old).unlink(missing_ok=True)  # only now: a move that failed leaves them as they were
            with _writing(out / MANIFEST):
                write_json(out / MANIFEST, {"files": sorted(new)})
    finally:
        for video in videos.values():  # a render that failed or was interrupted: its partial videos are dropped
            video.close(ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)


def _refuse_others_files(out: Path, names: set[str]) -> None:
    """UserError when the folder ``out`` holds a file this render would replace that no earlier render there wrote
    (not in its MANIFEST): the user's own rgb_0000.png was replaced without a word. An earlier render's frames are
    replaced freely, as re-rendering into one folder is the point of it."""
    theirs = sorted(n for n in names - _earlier_render(out) if (out / n).exists() or (out / n).is_symlink())
    if theirs:
        more = f", ... ({len(theirs)} files)" if len(theirs) > 1 else ""
        them = "them" if len(theirs) > 1 else "it"
        raise UserError(f"{out}: holds {theirs[0]}{more} that no earlier render there wrote; --force replaces {them} "
                        "(or choose another --out)")


class _writing:  # noqa: N801  (a context manager, used as ``with _writing(target):``)
    """Report a failure to write ``target`` (an output the user named, not the staging file written first) as an
    OSError naming it: ``rwf`` says it in one line, exit 1, as every failure to write an output (cli.dispatch).
    OpenEXR says a full disk as ``RuntimeError: Failed to write pixel data ... No space left on device``."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror or str(e), str(self.target)) from e
        if isinstance(e, RuntimeError) and not out_of_memory(e):  # the writer's (an allocator's is said as such)
            text = " ".join(str(e).split()) or type(e).__name__
            code = errno.ENOSPC if "No space left" in text else errno.EIO
            raise OSError(code, os.strerror(code) if code == errno.ENOSPC else f"cannot write ({text[:200]})",
                          str(self.target)) from e
        return False


def _earlier_render(out: Path) -> set[str]:
    """The frame and video names an earlier render wrote into ``out`` (its MANIFEST; none if it is unreadable)."""
    import fnmatch  # noqa: PLC0415

    try:
        names = read_json(out / MANIFEST)["files"] if (out / MANIFEST).is_file() else []
    except (UserError, KeyError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and any(fnmatch.fnmatchcase(n, p) for p in FRAME_PATTERNS)}


def _need_ffmpeg() -> None:
    try:
        import imageio.v3  # noqa: F401, PLC0415
        import imageio_ffmpeg  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("--video needs imageio-ffmpeg (pip install imageio-ffmpeg)") from None


class VideoWriter:
    """H.264 MP4 (yuv420p, imageio's settings) through imageio-ffmpeg, fed one frame at a time, so a long video
    needs the memory of one frame (the frames were kept for one write: 24 bytes a pixel for rgb and depth, 1.5 GB for
    a thousand 250x250 frames). Sizes are padded to even numbers for yuv420p; the file is complete after
    :meth:`close`.

    Args:
        path: the .mp4 to write (replaced).
        width, height: the frames' size in pixels.
        fps: frames per second.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float):
        _need_ffmpeg()
        import imageio_ffmpeg  # noqa: PLC0415

        self.path, self.pad = Path(path), (height % 2, width % 2)
        self._gen = imageio_ffmpeg.write_frames(str(path), (width + self.pad[1], height + self.pad[0]), fps=fps,
                                                codec="libx264", quality=5, macro_block_size=1,
                                                ffmpeg_log_level="quiet")  # its failures are said by rwf, once
        self._gen.send(None)  # starts ffmpeg

    def append(self, frame: np.ndarray) -> None:
        """One frame (H, W, 3) float in [0, 1] (clipped)."""
        arr = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
        arr = np.pad(arr, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(arr))

    def close(self, ignore_errors: bool = False) -> None:
        """Finish the file (ffmpeg writes its index); ``ignore_errors`` for a file about to be discarded."""
        gen, self._gen = self._gen, None
        if gen is None:
            return
        try:
            gen.close()
        except Exception:  # noqa: BLE001
            if not ignore_errors:
                raise
        if not ignore_errors and not (self.path.is_file() and self.path.stat().st_size > 0):
            raise OSError(f"{self.path}: ffmpeg wrote no video (its messages are above)")
