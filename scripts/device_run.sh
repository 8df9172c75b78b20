#!/usr/bin/env bash
# The one command for a lent GPU machine (the `device` tool), over a copy of this checkout with .carry/ beside it
# (made here by scripts/device_pack.sh). It installs the carried wheels, points RWF_DATA at the carried data,
# keeps the compiled kernels in .rwf_cache/ (git-ignored, so a warm machine keeps them between calls), runs the
# stages in order, skips a stage that would not finish inside one 600 s device command, and prints a table.
#
#   check           scripts/gpu_check.sh: build the CUDA and CPU kernels, the CUDA tests, the marcher benchmark
#                   (issue 3; about 3-5 min)
#   nerf-PARAM      lego 400x400 ('lego-gpu', the hash grid): up to 300 s of training, test PSNR on 8 test views
#                   at a quarter, half and all of it (issue 5; the budget shrinks to the time left in the call)
#   nerffourier-PARAM  the same with --encoding fourier (4 x 128 Fourier field)
#   nerfpair        plain and rwf on lego-gpu in one process, up to 150 s of training each (issue 5's equal-time
#                   comparison on a GPU; about 6 min)
#   tancik-PARAM    the simplified-NeRF protocol, up to 480 s (issue 5's comparability check; about 9 min)
#   image           the image-regression protocol (issue 2)
#   shape-MESH      the occupancy protocol on armadillo, spot or bunny (issue 4)
#   (PARAM: plain, wn or rwf)
#
# A session has 15 minutes of device time in all, the machine's start (1-2 min) and every idle second included, and
# a warm machine is given back 30 s after a call ends. So: one call that does the most important stages, with
# DEVICE_RUN_LIMIT (the seconds this script may take; it stops a late stage itself, so that the logs and the table
# still come back) a little under the call's timeout_s, and give_back() at once after it:
#   run(command="DEVICE_RUN_LIMIT=560 bash scripts/device_run.sh check nerfpair", carry=[".carry"], timeout_s=590)
# A second call in the same session: read status() first and set DEVICE_RUN_LIMIT to its budget_left_s less 60
# (the tool cuts a call at the time left, and a cut call returns no table).
# Logs come back in $OUT: device_run.log, check-logs.txt and one log per benchmark stage (gpu_bench.sh names them:
# nerf-rwf.log, nerf-rwf-fourier.log for nerffourier-rwf, ...).
# Exit status 0 only when every stage ran and passed. DEVICE_RUN_DRY=1 runs CPU-sized stand-ins of the stages in
# minutes, to check this script and its environment without a GPU; DEVICE_RUN_LIMIT sets the call's seconds (570).
set -uo pipefail
cd "$(dirname "$0")/.."
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
[ $# -ge 1 ] || usage
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/device_run.XXXXXX")}
mkdir -p "$OUT"
LIMIT=${DEVICE_RUN_LIMIT:-570}  # seconds this call may take in all
DRY=${DEVICE_RUN_DRY:-0}
T0=$(date +%s)
exec 3>&1 4>&2 > >(tee -a "$OUT/device_run.log") 2>&1
TEE=$!

for stage in "$@"; do  # every stage is known before anything runs
    case $stage in
        check|image|nerf-plain|nerf-wn|nerf-rwf|nerffourier-plain|nerffourier-wn|nerffourier-rwf|nerfpair) ;;
        tancik-plain|tancik-wn|tancik-rwf|shape-armadillo|shape-spot|shape-bunny) ;;
        *) echo "device_run: unknown stage '$stage' (stages: check image nerf-PARAM nerffourier-PARAM nerfpair tancik-PARAM" \
                "shape-MESH)"; exit 2 ;;
    esac
done

export PYTHON=${PYTHON:-python3}
if [ -d .carry/wheels ] && compgen -G ".carry/wheels/*.whl" >/dev/null; then
    if [ "$DRY" = 1 ] && "$PYTHON" -c "import trimesh" 2>/dev/null; then
        echo "device_run: dry run, trimesh already importable: wheels not installed"
    else
        site=${TMPDIR:-/tmp}/rwf_site
        # a failed install only fails the stages that need the wheels (trimesh: check's benchmark, shape), not nerf
        if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
                .carry/wheels/*.whl; then
            export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "device_run: installing the carried wheels failed; going on without them"
        fi
    fi
else
    echo "device_run: no .carry/wheels (make them with scripts/device_pack.sh; pass carry=[\".carry\"])"
fi
if [ -d .carry/data ]; then
    export RWF_DATA=$PWD/.carry/data
elif [ -z "${RWF_DATA:-}" ]; then
    echo "device_run: no .carry/data and RWF_DATA unset: the stages that read shared data will fail"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RWF_CACHE=${RWF_CACHE:-$PWD/.rwf_cache} MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
# the kernel build needs ninja and nvcc on PATH: where the image has them beside its python or CUDA, not on PATH, add
if ! command -v ninja >/dev/null; then
    for dir in "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
               "$("$PYTHON" -c 'import ninja; print(ninja.BIN_DIR)' 2>/dev/null)"; do
        if [ -n "$dir" ] && [ -x "$dir/ninja" ]; then export PATH="$dir:$PATH"; break; fi
    done
fi
if ! command -v nvcc >/dev/null && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
fi
if [ -z "${CXX:-}" ] && ! command -v c++ >/dev/null && command -v g++ >/dev/null; then
    export CXX=g++  # torch's extension builder and rwf_render ask for c++ unless CXX names another
fi
# one call at a time runs here: a lock left by a build killed in an earlier call would make every later build wait
# forever (torch's FileBaton)
rm -f "$RWF_CACHE"/ext-*/lock
# build the CUDA kernel for this GPU alone (torch's default too, unless the image sets a list of its own)
# one torch import for both lines below (a cold import takes seconds, counted in this call's time)
read -r arch versions < <("$PYTHON" -c 'import sys, torch
cuda = torch.cuda.is_available()
arch = "%d.%d" % torch.cuda.get_device_capability() if cuda else "-"
print(arch, "python", sys.version.split()[0], "torch", torch.__version__, "cuda", cuda)')
[ "${arch:-}" != - ] || arch=""
if [ -n "$arch" ]; then
    [ "${TORCH_CUDA_ARCH_LIST:-$arch}" = "$arch" ] || echo "device_run: TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST -> $arch"
    export TORCH_CUDA_ARCH_LIST=$arch
fi
echo "device_run: $(date -u '+%F %T') UTC; ${versions:-torch not importable}; RWF_DATA=${RWF_DATA:-unset}"

BUILD_S=${DEVICE_RUN_BUILD_S:-90}  # the most a stage's kernel build may take (a cold CUDA build: about a minute)
estimate() {  # seconds a stage needs, to decide whether it can still finish inside this call
    if [ "$DRY" = 1 ]; then echo 60; return; fi
    # nerf: its training budget shrinks to what is left (gpu_bench.sh), down to 120 s of training
    case $1 in check) echo 300 ;; nerfpair) echo 360 ;; nerf*) echo 240 ;; tancik-*) echo 540 ;; image) echo 400 ;; shape-*) echo 500 ;; esac
}
bench_cmd() {  # the benchmark command of a stage; a dry run shrinks it to a CPU-sized smoke run
    local kind=${1%%-*} arg=${1#*-}
    if [ "$DRY" != 1 ]; then
        case $kind in
            nerf|tancik|shape) echo "bash scripts/gpu_bench.sh $kind $arg" ;;
            nerffourier) echo "bash scripts/gpu_bench.sh nerf $arg:fourier" ;;
            nerfpair) echo "bash scripts/gpu_bench.sh nerfpair" ;;
            image) echo "bash scripts/gpu_bench.sh image" ;;
        esac
        return
    fi
    case $kind in
        nerf) echo "$PYTHON benchmarks/nerf.py --downscale 8 --params $arg --budget 8 --marks 4 8 --steps 40 --test-images 2 --quiet" ;;
        nerfpair) echo "$PYTHON benchmarks/nerf.py --downscale 8 --params plain rwf --budget 8 --marks 4 8 --steps 40 --test-images 2 --quiet" ;;
        nerffourier) echo "$PYTHON benchmarks/nerf.py --downscale 8 --params $arg:fourier --budget 8 --marks 4 8 --steps 40 --test-images 2 --quiet" ;;
        tancik) echo "$PYTHON benchmarks/nerf.py --tancik --device cpu --downscale 8 --params $arg --budget 8 --marks 8 --steps 4 --test-images 1 --quiet" ;;
        shape) echo "$PYTHON benchmarks/shape.py --cpu --device cpu --meshes $arg --params plain rwf --steps 20 --mesh-res 32 --extract-res 0" ;;
        image) echo "$PYTHON benchmarks/image_regression.py --cpu --device cpu --size 32 --steps 20" ;;
    esac
}

SUMMARY=""
FAILED=0
for stage in "$@"; do
    left=$(( LIMIT - ($(date +%s) - T0) ))
    need=$(estimate "$stage")
    prebuild=0
    if [ "${RWF_NO_BUILD:-0}" != 1 ] && [[ $stage == nerf* || $stage == tancik-* ]]; then
        prebuild=1  # the kernel is built first, inside this stage's time: up to BUILD_S more
        need=$(( need + BUILD_S ))
    fi
    if [ "$need" -gt "$left" ]; then
        SUMMARY+=$(printf '%-16s %5s  %s' "$stage" - "SKIPPED: needs about ${need}s, ${left}s left in this call")$'\n'
        FAILED=1  # a stage asked for and not run is not a pass
        continue
    fi
    start=$(date +%s)
    echo "== device_run: $stage"
    if [ "$stage" = check ]; then
        logs=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_logs.XXXXXX")
        # each step of gpu_check.sh ends by the deadline (10 s more if it must be killed); the outer timeout is only
        # a safety net
        GPU_CHECK_LOGS=$logs GPU_CHECK_DRY_RUN=$DRY GPU_CHECK_DEADLINE=$(( T0 + LIMIT - 20 )) \
            timeout --kill-after=5 $(( left - 5 )) bash scripts/gpu_check.sh
        rc=$?
        for f in "$logs"/*; do printf '\n===== %s\n' "$(basename "$f")"; cat "$f"; done >"$OUT/check-logs.txt"
        export RWF_NO_BUILD=1  # built (or failed to) once: no later process of this call builds again
    else
        if [ "$prebuild" = 1 ]; then
            # build (or find) the kernel that the stage marches with first, so that no timed run waits for a
            # compiler (the image and shape stages do not march); the build may not eat into the stage's own time
            kind=$([ -n "$arch" ] && echo cuda || echo cpu)
            build_s=$(( left - $(estimate "$stage") - 10 ))  # at least BUILD_S - 10, as need counted BUILD_S
            timeout --kill-after=5 "$build_s" "$PYTHON" -m rwf_render.raymarch.build --only "$kind" --verbose \
                || echo "device_run: $kind kernel build failed (the torch marcher will run)"
            rm -f "$RWF_CACHE"/ext-*/lock  # a build killed by its timeout leaves its lock: nobody waits on it
            export RWF_NO_BUILD=1  # a failed build is not retried inside the timed run
        fi
        left=$(( LIMIT - ($(date +%s) - T0) ))
        read -r -a cmd <<<"$(bench_cmd "$stage")"
        # gpu_bench.sh stops its benchmark itself by GPU_BENCH_LIMIT (and writes $OUT/STAGE.log); the outer timeout
        # is only a safety net
        GPU_BENCH_LIMIT=$(( left - 20 )) timeout --kill-after=5 $(( left - 5 )) "${cmd[@]}"
        rc=$?
    fi
    [ "$rc" = 0 ] || FAILED=1
    SUMMARY+=$(printf '%-16s %5ss  %s' "$stage" "$(( $(date +%s) - start ))" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")")$'\n'
done
echo ""
echo "stage             time  status"
printf '%s' "$SUMMARY"
echo "device_run: $([ $FAILED = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - T0 )) s; logs in $OUT"
exec 1>&3 2>&4  # let tee see the end of its input and finish the log before the call returns
wait "$TEE" 2>/dev/null
exit $FAILED
