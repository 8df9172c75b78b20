"""How many points one field call takes when a field is evaluated without training (exports, renders, metrics,
occupancy-grid updates).

On a GPU big calls pay: fewer kernel launches. On the CPU they cost: an activation of 2^18 points x 256 features is
256 MB, which glibc takes fresh from the system for every call and faults in page by page (a 128^3 SDF export spent
3.9 of its 10.3 CPU seconds in the kernel so). Calls of :data:`CPU_EVAL_CHUNK` points keep their buffers in the
allocator's reused heap: the same results (each point is computed alone), about half the CPU time and memory
(benchmarks/eval_chunk.py, BENCHMARKS.md).
"""

from __future__ import annotations

import torch

CPU_EVAL_CHUNK = 8192


def eval_chunk(device: str | torch.device, chunk: int) -> int:
    """``chunk`` on a GPU; at most :data:`CPU_EVAL_CHUNK` elsewhere."""
    return chunk if torch.device(device).type == "cuda" else min(chunk, CPU_EVAL_CHUNK)
