#!/usr/bin/env bash
# Prepare what a lent GPU machine (the `device` tool) needs beside this checkout, in .carry/ (git-ignored):
#   wheels/   Python packages its image lacks (trimesh: mesh loading for the marcher and shape benchmarks;
#             pypng: the PNGs a fit writes, so that `rwf fit nerf` runs there too); the image has torch, numpy, scikit-image, imageio, matplotlib, scipy, tqdm and pytest, but no open3d,
#             which the code then does without: inside/outside by ray parity in torch)
#   data/     the shared data the GPU stages read: images/, meshes/ and nerf/lego_400/ (the shared folder
#             beside the checkout does not travel)
# Then: run `bash scripts/device_run.sh STAGE...` there with carry [".carry"] (see device_run.sh).
#
# Usage: scripts/device_pack.sh [--dest DIR] [--no-wheels]     (reads $RWF_DATA, else ../shared/data)
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=.carry
WHEELS=1
while [ $# -gt 0 ]; do
    case $1 in
        --dest) DEST=${2:?--dest needs a folder}; shift 2 ;;
        --no-wheels) WHEELS=0; shift ;;
        *) echo "device_pack: unknown option $1 (usage: scripts/device_pack.sh [--dest DIR] [--no-wheels])"; exit 2 ;;
    esac
done
DATA=${RWF_DATA:-../shared/data}
PY=${PYTHON:-python3}
LIMIT=$((60 * 1024 * 1024))  # the device tool carries 64 MiB in all, the checkout included: leave a margin

for need in images/astronaut.png meshes/armadillo.obj meshes/spot.obj meshes/bunny.obj nerf/lego_400/transforms_train.json; do
    [ -e "$DATA/$need" ] || { echo "device_pack: $DATA/$need not found (set RWF_DATA to the shared data folder)"; exit 2; }
done
TMP="$DEST.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/wheels" "$TMP/data/nerf"
if [ $WHEELS = 1 ]; then
    version=$("$PY" -c "import trimesh; print(trimesh.__version__)" 2>/dev/null) || version=
    png=$("$PY" -c "import importlib.metadata as m; print(m.version('pypng'))" 2>/dev/null) || png=
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$TMP/wheels" \
            "trimesh${version:+==$version}" "pypng${png:+==$png}"; then
        echo "device_pack: could not download the trimesh and pypng wheels (no network?); --no-wheels packs the" \
             "data alone"
        exit 2
    fi
fi
cp -r "$DATA/images" "$TMP/data/images"
cp -r "$DATA/meshes" "$TMP/data/meshes"
cp -r "$DATA/nerf/lego_400" "$TMP/data/nerf/lego_400"
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)  # what travels
carried=$(du -sb "$TMP" | cut -f1)
if [ $((tree + carried)) -gt $LIMIT ]; then
    echo "device_pack: checkout ($tree B) and .carry ($carried B) exceed the $LIMIT B the device tool carries"
    exit 2
fi
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "device_pack: $DEST ready: $(ls "$DEST/wheels" | tr '\n' ' ')data $(du -sh "$DEST/data" | cut -f1); checkout $((tree / 1024)) KiB, in all $(( (tree + carried) / 1024 / 1024 )) MiB of 64"
