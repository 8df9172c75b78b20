#!/usr/bin/env bash
# GPU check of the ray marcher (issue 3), for a machine with a CUDA GPU, nvcc and a CUDA build of torch.
# In well under 5 minutes on an H100 it
#   1. builds the CUDA and the CPU extension into the cache (in parallel),
#   2. runs the CUDA tests (the CUDA kernel against the torch twin, on the GPU and against the CPU; the field
#      under bfloat16 autocast against float32; every pipeline's fit, eval, render and exports on the GPU),
#   3. runs the marcher benchmark on every backend (torch twin on the GPU, C++ CPU kernel, CUDA kernel),
#   4. prints a short table. Exit status 0 only when every step passed.
# Usage: scripts/gpu_check.sh        (from any folder; honours RWF_CACHE, RWF_DATA, GPU_CHECK_LOGS: a folder for
#                                     the step logs, else a new temporary one, and GPU_CHECK_DEADLINE: a time in
#                                     seconds since the epoch by which every step must end, as date +%s prints)
#        GPU_CHECK_DRY_RUN=1 scripts/gpu_check.sh   runs the same steps without a GPU (to check the script itself)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
LOG=${GPU_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
T0=$(date +%s)
FAILED=0
SUMMARY=""

note() { printf '%s\n' "$*"; }
run_step() {  # run_step NAME SECONDS COMMAND...: output to $LOG/NAME.log, a line in the summary
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    if [ -n "${GPU_CHECK_DEADLINE:-}" ] && [ $(( GPU_CHECK_DEADLINE - start )) -lt "$limit" ]; then
        limit=$(( GPU_CHECK_DEADLINE - start ))
        if [ "$limit" -lt 5 ]; then
            note "== $name: SKIPPED (the deadline has passed)"
            SUMMARY+=$(printf '%-10s %5s  %s' "$name" - "SKIPPED: no time left before GPU_CHECK_DEADLINE")$'\n'
            FAILED=1
            return
        fi
    fi
    note "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$LOG/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        status=ok
    else
        status="FAILED (exit $rc; log $LOG/$name.log)"
        FAILED=1
        tail -n 25 "$LOG/$name.log"
    fi
    SUMMARY+=$(printf '%-10s %5ss  %s' "$name" "$(( $(date +%s) - start ))" "$status")$'\n'
}

# -- 0. what is here ---------------------------------------------------------------------------------------------
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ]; then
        note "gpu_check: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA device: nothing to do"
        exit 2
    fi
    note "gpu_check: dry run without a GPU (CUDA steps will skip)"
fi
if ! command -v nvcc >/dev/null && [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ]; then
    note "gpu_check: nvcc is not on PATH (the CUDA toolkit is needed to build the kernel)"; exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
command -v nvcc >/dev/null && nvcc --version | tail -n 2
# what the build needs beside nvcc (a missing one shows here, before the build step's log)
"$PY" -c "import sys, sysconfig, pathlib; h = pathlib.Path(sysconfig.get_paths()['include'], 'Python.h'); \
print('python', sys.version.split()[0], 'Python.h', 'found' if h.is_file() else f'MISSING ({h})')"
note "c++: $(command -v "${CXX:-c++}" >/dev/null && "${CXX:-c++}" --version | head -n 1 || echo MISSING); \
ninja: $(command -v ninja >/dev/null && ninja --version || echo MISSING); TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-unset}"

# -- 1. build both kernels at once (each prints what it did) -----------------------------------------------------
cat >"$LOG/build.sh" <<EOS
kinds="cpu"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && kinds="cpu cuda"
pids=""
# --verbose: the compiler's own output (without it a failed build says only its first line)
for k in \$kinds; do "$PY" -m rwf_render.raymarch.build --only \$k --verbose >"$LOG/build-\$k.log" 2>&1 & pids="\$pids \$!"; done
rc=0
for p in \$pids; do wait \$p || rc=1; done
cat "$LOG"/build-*.log
exit \$rc
EOS
run_step build 240 bash "$LOG/build.sh"
# from here on nothing builds: a failed build is not retried by every later process (the torch marcher runs, with
# its one warning), and a build killed by its timeout leaves no lock for them to wait on forever
rm -f "${RWF_CACHE:-$HOME/.cache/rwf_render}"/ext-*/lock
export RWF_NO_BUILD=1

# -- 2. the CUDA tests --------------------------------------------------------------------------------------------
# (and each pipeline's fit, eval, render and exports on the GPU: test_device_pipelines.py)
run_step tests 150 "$PY" -m pytest -q -rs -m cuda tests/test_raymarch_backend.py tests/test_encodings.py \
    tests/test_device_pipelines.py

# -- 3. the benchmark ---------------------------------------------------------------------------------------------
# with the kernel at other block sizes and the GPU time of each kernel of a march (bench.log): the 20x target of
# issue 3 was not met at 256 threads per block (13.6x on an H200)
run_step bench 200 "$PY" benchmarks/raymarch.py --quick --cuda-blocks 64 128 256 512 --profile

# -- 4. the table -------------------------------------------------------------------------------------------------
note ""
note "step        time  status"
printf '%s' "$SUMMARY"
if [ -s "$LOG/bench.log" ]; then
    note ""
    grep -E '^(grid|backend|torch|cpu|cuda|composite)' "$LOG/bench.log"
fi
note ""
note "gpu_check: $([ $FAILED = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - T0 )) s; logs in $LOG"
note "next, the GPU-sized protocols of the other benchmarks: scripts/gpu_bench.sh (one stage per call)"
exit $FAILED
