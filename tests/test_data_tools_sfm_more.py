"""photos: the images counted are the images COLMAP uses. pycolmap's feature extraction lists its image folder
recursively, while ``rwf data photos`` counts (and checks sizes of) the images directly in the folder only."""

import sqlite3

import numpy as np
import pytest

from data_tools.common import save_image
from data_tools.sfm import photos_to_dataset
from rwf_render.errors import UserError


def _database_names(db) -> list[str]:
    """The image names in a COLMAP database, read with sqlite (its ``images`` table), not through pycolmap."""
    with sqlite3.connect(db) as con:
        return sorted(row[0] for row in con.execute("SELECT name FROM images"))


def _folder(root):
    """3 tiny noise images at the top, 2 more in sub-folders (one nested), and a sub-folder without images."""
    rng = np.random.default_rng(0)
    for rel in ("a.png", "b.png", "c.png", "sub/d.png", "more/deeper/e.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        save_image(root / rel, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image\n")
    return root


def test_pycolmap_reads_sub_folders_unless_given_the_names(tmp_path):
    """The behaviour the fix relies on: without ``image_names`` COLMAP takes the images of every sub-folder too;
    with them, exactly those."""
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (optional) is not installed: pip install pycolmap")
    folder = _folder(tmp_path / "imgs")
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 1
    pycolmap.extract_features(tmp_path / "all.db", folder, extraction_options=options, device=pycolmap.Device.cpu)
    assert _database_names(tmp_path / "all.db") == ["a.png", "b.png", "c.png", "more/deeper/e.jpg", "sub/d.png"]
    pycolmap.extract_features(tmp_path / "top.db", folder, image_names=["a.png", "c.png"],
                              extraction_options=options, device=pycolmap.Device.cpu)
    assert _database_names(tmp_path / "top.db") == ["a.png", "c.png"]


def test_photos_gives_colmap_the_images_it_counts(tmp_path, monkeypatch):
    """COLMAP extracted the sub-folders' images too (5 here) while the count, the size check and the registration
    threshold saw 3; now it gets the 3 top-level images, and one line says the sub-folders are ignored."""
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (optional) is not installed: pip install pycolmap")
    folder = _folder(tmp_path / "imgs")
    used: list[list[str]] = []
    real = pycolmap.extract_features

    def spy(database_path, *args, **kwargs):
        real(database_path, *args, **kwargs)
        used.append(_database_names(database_path))

    monkeypatch.setattr(pycolmap, "extract_features", spy)
    lines: list[str] = []
    with pytest.raises(UserError, match=r"only \d+ of 3 images registered"):  # noise: nothing to match
        photos_to_dataset(tmp_path / "out", images_dir=folder, log=lines.append)
    assert used == [["a.png", "b.png", "c.png"]]
    notes = [line for line in lines if "ignoring" in line]
    assert len(notes) == 1 and "2 sub-folder(s) (more, sub)" in notes[0] and "notes" not in notes[0]
    assert "\n" not in notes[0]


def test_no_note_without_sub_folders_of_images(tmp_path, monkeypatch):
    """A folder whose only sub-folder holds no image says nothing about sub-folders."""
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (optional) is not installed: pip install pycolmap")
    folder = _folder(tmp_path / "imgs")
    for rel in ("sub/d.png", "more/deeper/e.jpg"):
        (folder / rel).unlink()
    used: list[list[str]] = []
    real = pycolmap.extract_features
    monkeypatch.setattr(pycolmap, "extract_features",
                        lambda db, *a, **k: (real(db, *a, **k), used.append(_database_names(db))))
    lines: list[str] = []
    with pytest.raises(UserError, match=r"of 3 images registered"):
        photos_to_dataset(tmp_path / "out", images_dir=folder, log=lines.append)
    assert used == [["a.png", "b.png", "c.png"]] and not [line for line in lines if "ignoring" in line]
