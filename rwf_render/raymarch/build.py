"""Build the ray marcher's compiled kernels into the cache now: ``python -m rwf_render.raymarch.build``.

The install script runs this once so that the first render does not wait for a compiler. It builds the C++ CPU
kernel, and the CUDA kernel too when torch sees a GPU and nvcc is present (``--cuda`` makes a missing CUDA build
an error). Exit status 0 when every requested kernel is ready, 1 otherwise, with one line saying why.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import _backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rwf_render.raymarch.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also require the CUDA kernel")
    parser.add_argument("--only", choices=_backend.KINDS, help="build just this kernel")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    kinds = ["cpu"] + (["cuda"] if args.cuda or torch.cuda.is_available() else [])
    if args.only:
        kinds = [args.only]
    ok = True
    for kind in kinds:
        try:
            if _backend.load(kind, allow_build=False) is None:
                _backend.build(kind, verbose=args.verbose)
            print(f"rwf_render.raymarch: {kind} kernel ready in {_backend.build_dir(kind)}")
        except Exception as e:  # noqa: BLE001  (one line, not a traceback)
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            print(f"rwf_render.raymarch: cannot build the {kind} kernel: {lines[0] if lines else type(e).__name__}"
                  f" (rerun with --verbose for the compiler output)", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
