#!/usr/bin/env bash
# The GPU-sized protocols of the benchmarks, one stage per call so that each fits a 10-minute device command.
# Run scripts/gpu_check.sh first (it builds the CUDA kernel); every stage prints its table and the JSON line.
#
#   scripts/gpu_bench.sh image            # Tancik's image regression, full protocol (512 px, 2000 steps), issue 2
#   scripts/gpu_bench.sh shape MESH       # Tancik's occupancy protocol on one shared mesh, plain/wn/rwf, issue 4
#   scripts/gpu_bench.sh nerf PARAM       # lego 400x400 ('lego-gpu' preset) for up to 300 s of training, test PSNR
#                                         # on 8 test views at a quarter, half and all of it (issue 5: >= 30 dB
#                                         # within 5 minutes); run it for plain and rwf on the same machine for the
#                                         # equal-time comparison. The preset's field is the hash grid;
#                                         # PARAM:fourier (rwf:fourier) for Fourier features
#   scripts/gpu_bench.sh nerfpair         # the same for plain and rwf in one process, one after the other, up to
#                                         # 150 s of training each (issue 5: RWF at least as good as plain at equal
#                                         # time, on a GPU; the budget shrinks to fit GPU_BENCH_LIMIT)
#   scripts/gpu_bench.sh tancik PARAM     # the simplified-NeRF protocol (RWF.md, 25.48 dB published), up to 480 s
#
# Output goes to stdout and to $OUT (or a temporary folder) as STAGE.log. GPU_BENCH_PRINT=1 only prints the command
# a stage would run. Honours RWF_DATA, PYTHON and
# GPU_BENCH_LIMIT (seconds the benchmark may run, 570 by default, so that a stage fits a 10-minute device command;
# the nerf and tancik training budgets shrink to fit it, keeping NERF_SETUP_S for loading, the test renders and
# the table).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
[ $# -ge 1 ] || usage
stage=$1
arg=${2:-}
PRINT=${GPU_BENCH_PRINT:-0}  # 1: print the stage's command and exit (no GPU needed; to check the budgets)
if [ "$PRINT" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_bench: torch sees no CUDA device; these protocols are sized for a GPU (the --cpu variants are not)"
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

need_arg() {  # need_arg WHAT ALLOWED...
    local what=$1
    shift
    for ok in "$@"; do [ "$arg" = "$ok" ] && return 0; done
    echo "gpu_bench: $stage needs a $what: one of $*"
    exit 2
}

LIMIT=${GPU_BENCH_LIMIT:-570}
SETUP=${NERF_SETUP_S:-90}
fit_budget() {  # fit_budget MOST LEAST: training seconds that fit LIMIT after SETUP, at most MOST, at least LEAST
    local b=$(( LIMIT - SETUP ))
    [ "$b" -gt "$1" ] && b=$1
    if [ "$b" -lt "$2" ]; then
        echo "gpu_bench: $stage needs at least $(( $2 + SETUP )) s; GPU_BENCH_LIMIT is $LIMIT" >&2
        return 1
    fi
    echo "$b"
}

case $stage in
    image)
        cmd=("$PY" benchmarks/image_regression.py --device cuda) ;;
    shape)
        need_arg mesh armadillo spot bunny
        cmd=("$PY" benchmarks/shape.py --device cuda --meshes "$arg" --extract-res 256) ;;
    nerf)
        need_arg param plain wn rwf plain:fourier wn:fourier rwf:fourier plain:hashgrid wn:hashgrid rwf:hashgrid
        budget=$(fit_budget 300 120) || exit 2
        cmd=("$PY" benchmarks/nerf.py --gpu --params "$arg" --budget "$budget" --marks $((budget / 4)) $((budget / 2))
             "$budget" --test-images 8 --quiet) ;;
    nerfpair)
        budget=$(( (LIMIT - 2 * SETUP) / 2 ))  # each param loads, trains and renders its marks in turn
        [ "$budget" -gt 150 ] && budget=150
        if [ "$budget" -lt 60 ]; then
            echo "gpu_bench: nerfpair needs at least $(( 120 + 2 * SETUP )) s; GPU_BENCH_LIMIT is $LIMIT" >&2
            exit 2
        fi
        cmd=("$PY" benchmarks/nerf.py --gpu --params plain rwf --budget "$budget" --marks $((budget / 4))
             $((budget / 2)) "$budget" --test-images 8 --quiet) ;;
    tancik)
        need_arg param plain wn rwf
        budget=$(fit_budget 480 120) || exit 2
        cmd=("$PY" benchmarks/nerf.py --tancik --params "$arg" --budget "$budget" --marks $((budget / 4))
             $((budget / 2)) "$budget" --test-images 8 --quiet) ;;
    *)
        usage ;;
esac
echo "== ${cmd[*]}"
[ "$PRINT" = 1 ] && exit 0
DEST=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_bench.XXXXXX")}  # made only for a run: a refusal leaves nothing behind
mkdir -p "$DEST"
start=$(date +%s)
log="$DEST/$stage${arg:+-${arg//:/-}}.log"  # no ':' in a file name that must travel back
timeout --kill-after=10 "$LIMIT" "${cmd[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu_bench: $stage $arg exit $rc in $(( $(date +%s) - start )) s; log $log"
exit "$rc"
