"""The occupancy grid: updates from an analytic density, the update schedule, marking from geometry, queries."""

import math

import pytest
import torch

from rwf_render.raymarch import OccupancyGrid, _backend
from rwf_render.parity import inside_lattice

CENTER, RADIUS = torch.tensor([0.1, -0.05, 0.03]), 0.5


def ball(sigma, fog=0.0):
    return lambda x: sigma * ((x - CENTER).norm(dim=-1) < RADIUS).float() + fog


def cell_boxes(grid):
    """(n_cells, 3) lower corners and the (3,) cell size of a one-level grid."""
    size = (grid.aabb[3:] - grid.aabb[:3]) / torch.tensor(grid.resolution)
    lower = grid.cell_points(torch.arange(grid.n_cells)) - size / 2
    return lower, size


def ball_overlap(grid, sub=6):
    """Per cell: whether it meets the ball (exact) and the fraction of it inside (sub^3 sub-samples)."""
    lower, size = cell_boxes(grid)
    closest = torch.maximum(torch.minimum(CENTER, lower + size), lower)
    meets = (closest - CENTER).norm(dim=1) < RADIUS
    f = (torch.arange(sub) + 0.5) / sub
    offsets = torch.stack(torch.meshgrid(f, f, f, indexing="ij"), dim=-1).reshape(-1, 3) * size  # (sub^3, 3)
    fraction = torch.zeros(grid.n_cells)
    for idx in meets.nonzero()[:, 0].split(4096):
        pts = lower[idx, None] + offsets[None]
        fraction[idx] = ((pts - CENTER).norm(dim=-1) < RADIUS).float().mean(dim=1)
    return meets, fraction


def warm_up(grid, density_fn, step_size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for step in range(256):
        grid.update(step, density_fn, step_size=step_size, generator=gen)


def test_updates_from_a_ball_mark_the_cells_that_intersect_it():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32)
    warm_up(grid, ball(100.0), step_size=0.01)  # optical thickness 1 per step inside: far above 0.01
    occupied = grid.occupancy.view(-1)
    meets, fraction = ball_overlap(grid)
    assert not bool((occupied & ~meets).any()), "a cell outside the ball was marked"
    assert bool(occupied[fraction == 1].all()), "a cell inside the ball was missed"
    assert bool(occupied[fraction >= 0.5].all()), "a cell half inside the ball was missed after 16 updates"
    missed = meets & ~occupied
    assert missed.sum() < 0.1 * meets.sum() and fraction[missed].max() < 0.5  # only slivers stay empty


def test_density_below_the_threshold_is_not_marked():
    """Fog of thickness 5e-4 per step around a dense ball: the mean thickness is high, so the threshold is 0.01."""
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    warm_up(grid, ball(100.0, fog=0.05), step_size=0.01)
    meets, _ = ball_overlap(grid)
    occupied = grid.occupancy.view(-1)
    assert bool(occupied[meets].any()) and not bool((occupied & ~meets).any())


def test_a_faint_ball_is_marked_when_the_mean_is_lower_still():
    """Thickness 0.005 < 0.01 inside, nothing outside: the threshold falls to the mean, below the ball's value."""
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    warm_up(grid, ball(0.5), step_size=0.01)
    meets, fraction = ball_overlap(grid)
    occupied = grid.occupancy.view(-1)
    assert bool(occupied[fraction == 1].all()) and not bool((occupied & ~meets).any())


def test_the_schedule_warm_up_then_quarters_with_decay():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    seen = []

    def recording(fn):
        def density_fn(x):
            seen.append(x.clone())
            return fn(x)
        return density_fn

    gen = torch.Generator().manual_seed(0)
    assert not grid.update(5, recording(ball(100.0)), step_size=0.01, generator=gen)  # not a multiple of 16
    assert seen == []
    assert grid.update(0, recording(ball(100.0)), step_size=0.01, generator=gen)
    pts = torch.cat(seen)
    _, flat = grid.cells_of(pts)
    assert pts.shape[0] == grid.n_cells and torch.equal(flat.sort().values, torch.arange(grid.n_cells)), \
        "the warm-up evaluates every cell once, at a point inside it"
    centers = grid.cell_points(flat)
    assert (pts - centers).abs().max() > 0.3 * 2 / 16, "the points are jittered within their cells"

    before = grid.density.clone().view(-1)
    occupied_before = grid.occupancy.clone().view(-1)
    n_occupied = int(occupied_before.sum())
    seen.clear()
    assert grid.update(256, recording(lambda x: torch.zeros(x.shape[0])), step_size=0.01, generator=gen)
    _, flat = grid.cells_of(torch.cat(seen))
    quarter = grid.n_cells // 4
    assert 0 < n_occupied < quarter
    assert quarter <= flat.numel() <= quarter + n_occupied, "a quarter of all cells plus the occupied ones"
    evaluated = torch.zeros(grid.n_cells, dtype=torch.bool)
    evaluated[flat] = True
    assert evaluated[occupied_before].all(), "fewer occupied cells than a quarter: every one of them (nerfacc)"
    after = grid.density.view(-1)
    assert torch.allclose(after[flat], before[flat] * 0.95), "updated cells decay by 0.95 (new density 0)"
    untouched = torch.ones(grid.n_cells, dtype=torch.bool)
    untouched[flat] = False
    assert torch.equal(after[untouched], before[untouched])


def test_decay_lets_cells_go_once_the_density_has_moved():
    """A ball at one place, then at another: the old cells' thickness 1 decays as 0.95^n and drops below the
    threshold 0.01 after 90 updates (not before); the new ball's cells stay."""
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)

    def ball_at(x0):
        return lambda x: 100.0 * ((x - torch.tensor([x0, 0.0, 0.0])).norm(dim=-1) < 0.3).float()

    old, new = ball_at(-0.5), ball_at(0.5)
    grid.update(0, old, step_size=0.01)
    old_cells = grid.occupancy.clone()
    for n in range(1, 100):  # all cells every time (a long warm-up), so the decay count is exact
        grid.update(16 * n, new, step_size=0.01, warmup_steps=10 ** 9)
        if n == 89:
            assert torch.equal(grid.occupancy & old_cells, old_cells), "0.95^89 > 0.01: still occupied"
    assert not (grid.occupancy & old_cells).any(), "0.95^90 < 0.01: released"
    assert grid.occupancy.any()


def test_mark_points_and_query():
    grid = OccupancyGrid([0, 0, 0, 2, 1, 1], resolution=(16, 8, 8), levels=2)
    pts = torch.tensor([[0.1, 0.1, 0.1], [1.9, 0.9, 0.5], [-0.5, 0.5, 0.5], [9.0, 9.0, 9.0]])  # last: outside all
    assert grid.mark_points(pts) == 3
    occupied, density = grid.query(pts)
    assert occupied.tolist() == [True, True, True, False] and bool((density == 0).all())
    level, _ = grid.cells_of(pts)
    assert level.tolist() == [0, 0, 1, -1]
    assert int(grid.occupancy.sum()) == 3
    assert grid.mark_points(pts[:1], density=7.0) == 0 and grid.query(pts[:1])[1].item() == 7.0


def test_mark_mesh_covers_the_surface(data_dir):
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.load(data_dir / "meshes" / "spot.obj", force="mesh")
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    f = torch.tensor(mesh.faces)
    lo, hi = v.min(0).values, v.max(0).values
    grid = OccupancyGrid(torch.cat([lo - 0.05, hi + 0.05]), resolution=64)
    added = grid.mark_mesh(v, f)
    assert added == int(grid.occupancy.sum()) > 0
    assert bool(grid.query(v)[0].all())
    samples, _ = trimesh.sample.sample_surface(mesh, 20000, seed=0)
    hit = grid.query(torch.tensor(samples, dtype=torch.float32))[0].float().mean()
    assert hit > 0.999, "random points of the surface lie in marked cells"
    assert grid.occupied_fraction < 0.1, "only the surface shell, not the volume"


@pytest.mark.parametrize("method", ["open3d", "parity"])
def test_mark_mesh_solid_fills_a_watertight_mesh(method):
    trimesh = pytest.importorskip("trimesh")
    if method == "open3d":
        pytest.importorskip("open3d")
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32)
    grid.mark_mesh(torch.tensor(sphere.vertices), torch.tensor(sphere.faces), solid=True, inside_method=method)
    centers = grid.cell_points(torch.arange(grid.n_cells))
    r = centers.norm(dim=1)
    occupied = grid.occupancy.view(-1)
    half_diag = math.sqrt(3) * (2 / 32) / 2
    assert bool(occupied[r < 0.6 - 0.01].all()), "cells whose centers are inside are marked"
    assert not bool(occupied[r > 0.6 + half_diag + 0.01].any()), "nothing beyond the surface's cells"


def test_parity_inside_counts_a_shared_edge_once():
    """A box whose corners sit exactly on lattice columns: the diagonal edge shared by the two triangles of its top
    and bottom faces runs through columns, and each such column must still cross each face once. Columns are nudged
    by +1e-5 of a cell, so a center exactly on a side at x0 counts as inside and one at x1 as outside."""
    trimesh = pytest.importorskip("trimesh")
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32, levels=2)
    x0, x1 = -1 + 8.5 / 16, -1 + 24.5 / 16  # column centers 8 and 24 of level 0 (cell 1/16)
    box = trimesh.creation.box(bounds=[[x0, x0, -0.3], [x1, x1, 0.3]])
    found = torch.zeros(grid.n_cells, dtype=torch.bool)
    found[grid._inside_mesh(torch.tensor(box.vertices), torch.tensor(box.faces), "parity")] = True
    c = grid.cell_points(torch.arange(grid.n_cells))
    expected = ((c[:, :2] >= x0) & (c[:, :2] < x1)).all(1) & (c[:, 2].abs() < 0.3)
    assert int(expected.sum()) == 16 * 16 * 10 + 8 * 8 * 4  # level 0, and level 1's cells of 1/8
    assert torch.equal(found, expected)
    v, f = torch.tensor(box.vertices), torch.tensor(box.faces)
    in_chunks = inside_lattice(v, f, grid.level_aabbs()[0], grid.resolution, chunk=7)  # a few pairs at a time
    assert torch.equal(in_chunks, inside_lattice(v, f, grid.level_aabbs()[0], grid.resolution))


def test_parity_inside_agrees_with_open3d_on_a_real_mesh(data_dir):
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("open3d")
    mesh = trimesh.load(data_dir / "meshes" / "armadillo.obj", force="mesh")
    v, f = torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)
    lo, hi = v.min(0).values, v.max(0).values
    grid = OccupancyGrid(torch.cat([lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo)]), resolution=64)
    found = {}
    for method in ("open3d", "parity"):
        occ = torch.zeros(grid.n_cells, dtype=torch.bool)
        occ[grid._inside_mesh(v, f, method)] = True
        found[method] = occ
    assert int(found["open3d"].sum()) > 0.05 * grid.n_cells
    assert int((found["open3d"] != found["parity"]).sum()) <= 1e-4 * grid.n_cells


def look_at_origin(eye):
    """c2w (4, 4), OpenGL: the camera looks down -Z at the origin, +Y up."""
    eye = torch.tensor(eye, dtype=torch.float32)
    back = eye / eye.norm()  # +Z points away from what the camera looks at
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def test_frusta_marking_follows_the_opengl_camera():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    c2w = look_at_origin([0.0, 0.0, 3.0])[None]
    centers = grid.cell_points(torch.arange(grid.n_cells))
    depth = 3.0 - centers[:, 2]
    # principal point at pixel (0, 0), the top-left corner: only the right (+x) and lower (-y) part is in view
    seen = grid.cells_in_frusta(c2w, (40.0, 40.0, 0.0, 0.0, 20, 20), near=2.5, far=3.5).view(-1)
    assert seen.any()
    assert bool((centers[seen, 0] >= 0).all() and (centers[seen, 1] <= 0).all())
    assert bool(((depth[seen] >= 2.5) & (depth[seen] <= 3.5)).all())
    inside = (centers[:, 0] > 0) & (centers[:, 0] / depth < 0.45) & (centers[:, 1] < 0) & \
             (-centers[:, 1] / depth < 0.45) & (depth > 2.55) & (depth < 3.45)
    assert bool(seen[inside].all()), "cells well inside the frustum are seen"
    assert grid.mark_frusta(c2w, (40.0, 40.0, 0.0, 0.0, 20, 20), 2.5, 3.5) == int(seen.sum())


def test_restricting_to_frusta_keeps_updates_out_of_unseen_cells():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    cams = torch.stack([look_at_origin([0.0, 0.0, 3.0]), look_at_origin([3.0, 0.0, 0.0])])
    intrinsics = (40.0, 40.0, 10.0, 10.0, 20, 20)  # a quarter of the box across, at the origin
    grid.restrict_to_frusta(cams, intrinsics, near=0.1, far=10.0)
    seen = grid.cells_in_frusta(cams, intrinsics, near=0.1, far=10.0)
    assert seen.any() and not seen.all()
    grid.update(0, lambda x: torch.full((x.shape[0],), 100.0), step_size=0.01)
    assert torch.equal(grid.occupancy, seen)
    assert torch.equal(grid.fill_(True).occupancy, seen)


def test_invalid_grids_are_rejected():
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid([0, 0, 0, 1, -1, 1])
    with pytest.raises(ValueError, match="even"):
        OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=15)
    with pytest.raises(ValueError, match="divisible by 4"):
        OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=(8, 8, 6), levels=2)


def test_state_dict_round_trip_and_repr():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, levels=2, backend="torch")
    grid.update(0, ball(100.0), step_size=0.01)
    other = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, levels=2)
    other.load_state_dict(grid.state_dict())
    assert torch.equal(other.occupancy, grid.occupancy) and torch.equal(other.density, grid.density)
    assert "backend=torch" in repr(grid) and "levels=2" in repr(grid)


def test_a_device_move_drops_the_cached_marcher_spec():
    """spec() caches the uint8 occupancy and its pyramid under (version, address, device). After a CUDA -> CPU ->
    CUDA round trip the new occupancy can sit at the old address with the old version, and the cache would hand
    back a stale grid; a move therefore drops it, and the next spec() is computed from the moved buffers."""
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8).fill_(False)
    assert int(grid.spec().occ.sum()) == 0 and "_spec_cache" in grid.__dict__
    grid.to(torch.device("cpu"))
    assert "_spec_cache" not in grid.__dict__
    with torch.no_grad():
        grid.occupancy.copy_(grid.allowed)
    assert int(grid.spec().occ.sum()) == grid.n_cells


def test_the_cached_box_follows_an_in_place_change_of_the_aabb():
    """spec() also caches the box as Python floats (a GPU march then never reads it back); changing the aabb in
    place (as load_state_dict does) must reach the marcher: the same ray then starts its samples elsewhere."""
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8).fill_(True)
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    spec = grid.spec()
    assert spec.host == (tuple(spec.lo.tolist()), tuple(spec.scale.tolist())) == ((0.0, 0.0, 0.0), (8.0, 8.0, 8.0))
    backends = ["torch"] + (["cpu"] if _backend.load("cpu") is not None else [])
    before = {b: grid.sampling(o, d, step_size=0.25, backend=b).t_starts for b in backends}
    with torch.no_grad():
        grid.aabb.copy_(torch.tensor([0.5, 0.0, 0.0, 1.5, 1.0, 1.0]))
    assert grid.spec().host == ((0.5, 0.0, 0.0), (8.0, 8.0, 8.0))
    for b in backends:
        after = grid.sampling(o, d, step_size=0.25, backend=b).t_starts
        assert before[b].tolist() == [1.0, 1.25, 1.5, 1.75] and after.tolist() == [1.5, 1.75, 2.0, 2.25], b


def test_visible_cells_are_those_the_marcher_reaches_and_only_they_count_as_occupied():
    grid = OccupancyGrid([-1.0, -0.5, 0.0, 1.0, 0.5, 2.0], resolution=(8, 12, 16), levels=3)
    level, flat = grid.cells_of(grid.cell_points(torch.arange(grid.n_cells)))
    reached = torch.zeros(grid.n_cells, dtype=torch.bool)
    reached[flat[level >= 0]] = True
    vis = grid.visible()
    assert torch.equal(reached, vis.view(-1))
    per_level = grid.occupancy[0].numel()
    assert vis.sum().item() == per_level + 2 * (per_level - per_level // 8), "each cascade hides an eighth"

    grid.occupancy.copy_(~vis)  # only the coarse cells under the finer levels: never marched
    assert grid.occupied_fraction == 0.0
    grid.occupancy.zero_()
    grid.occupancy[2, 0, 0, 0] = True  # one reachable cell of the outermost level
    assert grid.occupied_fraction == pytest.approx(1 / vis.sum().item())
    grid.fill_()
    assert grid.occupied_fraction == 1.0
