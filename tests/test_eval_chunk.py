"""Field evaluation without training calls the field on at most ``CPU_EVAL_CHUNK`` points at a time on the CPU
(big calls cost page faults there: benchmarks/eval_chunk.py), the GPU's size on CUDA; the results are those of one
call over all points."""

import torch

from rwf_render import image, shape_task
from rwf_render.evalchunk import CPU_EVAL_CHUNK, eval_chunk
from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField
from rwf_render.mesh import evaluate_grid


def test_cpu_calls_are_capped_and_gpu_calls_are_not():
    assert eval_chunk("cpu", 1 << 18) == CPU_EVAL_CHUNK and eval_chunk("cpu", 100) == 100
    assert eval_chunk(torch.device("cuda"), 1 << 18) == 1 << 18


def test_chunked_evaluations_match_one_call_and_respect_the_cap():
    field = NeuralField(3, 1, EncodingConfig(kind="fourier", m=16, sigma=2.0), MLPConfig(depth=2, width=32), seed=0)
    sizes = []
    field.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    x = torch.rand(3 * CPU_EVAL_CHUNK + 5, 3) - 0.5
    with torch.no_grad():
        whole = field(x)[:, 0]
    sizes.clear()
    got = shape_task.predict(field, x)
    assert max(sizes) == CPU_EVAL_CHUNK and sum(sizes) == len(x)
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)
    sizes.clear()
    grid = evaluate_grid(lambda p: field(p)[:, 0], res=24)
    assert max(sizes) <= CPU_EVAL_CHUNK and sum(sizes) == 24 ** 3
    axes = torch.linspace(-0.5, 0.5, 24)
    p = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(grid).reshape(-1), field(p)[:, 0], rtol=1e-5, atol=1e-5)
    flat = NeuralField(2, 3, EncodingConfig(kind="fourier", m=16, sigma=2.0), MLPConfig(depth=2, width=32), seed=0)
    xy = torch.rand(CPU_EVAL_CHUNK + 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(image.predict(flat, xy), flat(xy), rtol=1e-5, atol=1e-6)
