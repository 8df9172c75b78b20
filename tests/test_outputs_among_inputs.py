"""`rwf render --out` and `rwf export mesh --out` of a NeRF run never write over or among its dataset's files.

`rwf render RUN --split train --out DATASET/train` put rgb_0000.png, depth_0000.exr, ... among the training photos
(and over any photo of those names), and `rwf export mesh RUN --out DATASET/mesh.ply` replaced a synthetic scene's
source mesh: both are refused before any work. A new file or folder elsewhere in the dataset is still allowed.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rwf_render.errors import UserError
from rwf_render.imgio import write_image
from rwf_render.rundir import refuse_among_inputs

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)


def _ngp_dataset(root: Path) -> Path:
    """transforms.json (instant-ngp) of 2 frames in images/, masks in masks/, depth maps in depth/ and a point
    cloud named by ply_file_path."""
    from rwf_render.cameras import look_at

    for sub in ("images", "masks", "depth"):
        (root / sub).mkdir(parents=True)
    frames = []
    for i in range(2):
        write_image(root / "images" / f"f{i}.png", np.full((8, 8, 3), 0.5, np.float32))
        write_image(root / "masks" / f"f{i}.png", np.ones((8, 8, 1), np.float32))
        write_image(root / "depth" / f"f{i}.png", np.ones((8, 8, 1), np.float32))
        eye = [3.0 * np.cos(i), 3.0 * np.sin(i), 1.0]
        frames.append({"file_path": f"images/f{i}.png", "mask_path": f"masks/f{i}.png",
                       "depth_file_path": f"depth/f{i}.png",
                       "transform_matrix": look_at(eye, (0.0, 0.0, 0.0)).tolist() + [[0.0, 0.0, 0.0, 1.0]]})
    (root / "points.ply").write_text("ply\n")
    (root / "transforms.json").write_text(json.dumps({"fl_x": 10.0, "w": 8, "h": 8, "cx": 4.0, "cy": 4.0,
                                                      "ply_file_path": "points.ply", "frames": frames}))
    return root


@pytest.mark.parametrize("out", ["images", "masks", "depth", ".", "images/f0.png", "masks/f1.png", "depth/f0.png",
                                 "transforms.json", "points.ply"])
def test_every_file_of_the_dataset_and_every_folder_holding_one_is_refused(tmp_path, out):
    data = _ngp_dataset(tmp_path / "data")
    with pytest.raises(UserError, match="is a file of the run's dataset|holds files of the run's dataset"):
        refuse_among_inputs(data / out, str(data))


@pytest.mark.parametrize("out", ["renders", "images/extra", "mesh.ply", "images/other.ply", "../elsewhere", ".."])
def test_other_places_in_or_beside_the_dataset_are_allowed(tmp_path, out):
    data = _ngp_dataset(tmp_path / "data")
    assert refuse_among_inputs(data / out, str(data)) is None  # no UserError
    assert refuse_among_inputs(data / out, str(tmp_path / "gone")) is None  # a dataset no longer there protects nothing
    assert refuse_among_inputs(data / out, None) is None


def _digest(folder: Path) -> dict:
    """Every path under ``folder`` (files and folders), each file with its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("argv", [["render", "{run}", "--split", "train", "--out", "{scene}/train"],
                                  ["render", "{run}", "--orbit", "2", "--out", "{scene}"],
                                  ["export", "mesh", "{run}", "--res", "32", "--out", "{scene}/mesh.ply"],
                                  ["export", "mesh", "{run}", "--pointcloud", "--out", "{scene}/mesh.ply"]],
                         ids=["render-train-folder", "render-dataset-root", "export-mesh-source", "pointcloud-source"])
def test_a_render_or_export_into_the_training_data_is_one_error_and_changes_nothing(still_life_run, capsys, argv):
    scene = still_life_run.parent / "scene"
    before = _digest(scene)
    says = one_cli_error(capsys, [a.format(run=still_life_run, scene=scene) for a in argv] + ["--quiet"])
    assert "of the run's dataset" in says and "choose another --out" in says, says
    assert _digest(scene) == before
