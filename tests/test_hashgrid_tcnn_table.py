"""The hash grid's tiny-cuda-nn backend keeps the torch backend's one (n_params, F) table: a checkpoint of either
loads into the other, gradients reach the table, and the torch paths (open_levels' weighted x-gradient) still run.
tiny-cuda-nn cannot run here, so a stand-in module with its interface (a flat ``params`` that ``forward`` reads)
computes the grid with the torch reference; the real one is compared in test_encodings on a CUDA machine."""

import sys
import types

import pytest
import torch
from torch import nn

from rwf_render.encodings import HashGrid

KW = dict(levels=4, log2_size=10, base_res=4, max_res=64)


class _StandInEncoding(nn.Module):
    """tiny-cuda-nn's Encoding as seen from torch: a flat parameter ``params`` of its own, read by ``forward``."""

    def __init__(self, n_input_dims, config, dtype=torch.float32):
        super().__init__()
        self.__dict__["reference"] = HashGrid(  # its lookup only (a submodule's table would be in the state)
            n_input_dims, levels=config["n_levels"], level_features=config["n_features_per_level"],
            log2_size=config["log2_hashmap_size"], base_res=config["base_resolution"], max_res=KW["max_res"])
        self.params = nn.Parameter(torch.zeros(self.reference.table.numel(), dtype=dtype))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        index, w = self.reference.lookup(x)
        table = self.params.view(-1, self.reference.level_features)
        return (table[index] * w[..., None]).sum(2).flatten(1)


@pytest.fixture
def stand_in_tcnn(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=_StandInEncoding))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_a_tcnn_grid_has_the_torch_grids_state_dict_both_ways(stand_in_tcnn):
    torch_grid = HashGrid(3, **KW, generator=torch.Generator().manual_seed(0))
    tcnn_grid = HashGrid(3, **KW, backend="tcnn", generator=torch.Generator().manual_seed(1))
    assert tcnn_grid.backend == "tcnn"
    assert list(tcnn_grid.state_dict()) == ["table"] == list(torch_grid.state_dict())
    assert [n for n, _ in tcnn_grid.named_parameters()] == ["table"]
    assert tcnn_grid.table.shape == torch_grid.table.shape
    x = torch.rand(256, 3)
    assert not torch.allclose(tcnn_grid(x), torch_grid(x))
    tcnn_grid.load_state_dict(torch_grid.state_dict())
    assert torch.allclose(tcnn_grid(x), torch_grid(x), atol=1e-7)
    assert tcnn_grid._tcnn.calls == 2  # the module ran, not the torch path
    back = HashGrid(3, **KW)
    back.load_state_dict(tcnn_grid.state_dict())
    assert torch.equal(back.table, torch_grid.table)


def test_the_tcnn_path_trains_the_grids_table(stand_in_tcnn):
    torch_grid = HashGrid(3, **KW)
    tcnn_grid = HashGrid(3, **KW, backend="tcnn")
    tcnn_grid.load_state_dict(torch_grid.state_dict())
    x, target = torch.rand(512, 3), torch.rand(512, torch_grid.out_dim)
    for grid in (torch_grid, tcnn_grid):
        ((grid(x) - target) ** 2).mean().backward()
    assert tcnn_grid.table.grad is not None and tcnn_grid.table.grad.abs().sum() > 0
    assert torch.allclose(tcnn_grid.table.grad, torch_grid.table.grad, atol=1e-9)
    opt = torch.optim.SGD(tcnn_grid.parameters(), lr=1e3)
    before = tcnn_grid(x).detach()
    opt.step()
    assert not torch.allclose(tcnn_grid(x), before)  # the stepped table is what the module reads next


def test_a_tcnn_grids_weighted_x_gradient_runs_in_torch(stand_in_tcnn):
    grid = HashGrid(2, **KW, backend="tcnn")
    grid.open_levels(0.5)
    x = torch.rand(64, 2, requires_grad=True)
    out = grid(x)
    out.sum().backward()
    assert out.shape == (64, grid.out_dim) and torch.isfinite(x.grad).all()
    assert grid._tcnn.calls == 0


def test_a_tcnn_grid_copies_after_a_forward(stand_in_tcnn):
    """The flat view handed to tcnn was left on the module: a non-leaf tensor, which copy.deepcopy (the viewer's
    snapshot of a training model) refuses."""
    import copy

    grid = HashGrid(3, **KW, backend="tcnn")
    grid(torch.rand(8, 3)).sum().backward()
    twin = copy.deepcopy(grid)
    x = torch.rand(16, 3)
    assert torch.equal(twin(x), grid(x))
