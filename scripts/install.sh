#!/usr/bin/env bash
# Install rwf-render and everything it needs, into the current Python environment.
#
# torch: an already-installed torch is kept (GPU users: install your CUDA build first). Otherwise the CPU build of
# torch 2.13.0 is installed: on Linux it is asked for by its local version, torch==2.13.0+cpu, from PyTorch's CPU
# index when that answers and from pip's configured indexes and wheel folders in any case, so that a plain
# `pip install torch` (on Linux a CUDA build of several GB) can never be what happens. Elsewhere PyPI's torch is
# the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check"

if $PY -c "import torch" 2>/dev/null; then
  echo "install: keeping the installed torch $($PY -c 'import torch; print(torch.__version__)')"
else
  want="torch==2.13.0"
  [ "$(uname -s)" = Linux ] && want="torch==2.13.0+cpu"
  cpu_index=()
  if $PY - <<'PY' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
PY
  then
    cpu_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  $PIP "$want" ${cpu_index[@]+"${cpu_index[@]}"} || {
    echo "install: could not install $want (the CPU build of PyTorch). Install the torch build you want" \
      "(https://pytorch.org) and run this script again: it keeps an installed torch." >&2
    exit 1
  }
fi

$PIP -e ".[all]"

# open3d's wheels need the system's libusb; install it when we can (root with apt), else stop and say how.
if ! $PY -c "import open3d" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null; }
  fi
  if ! why=$($PY -c "import open3d" 2>&1); then
    echo "install: open3d does not import ($(printf '%s\n' "$why" | tail -n 1)); after installing libusb-1.0" \
      "(Debian/Ubuntu: sudo apt-get install libusb-1.0-0), run this script again" >&2
    exit 1
  fi
fi

# The viewer's browser test drives headless Chromium; install it when we can (root with apt), else the test skips.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; } || \
      echo "install: chromium could not be installed; the viewer's browser test will be skipped" >&2
  else
    echo "install: optional: headless Chromium runs the viewer's browser test (sudo apt-get install chromium)" >&2
  fi
fi

# Build the ray marcher's CPU kernel now (once, about a minute) instead of at first use.
if $PY -c "import rwf_render.raymarch.build" 2>/dev/null; then
  $PY -m rwf_render.raymarch.build || echo "install: the compiled ray marcher is unavailable; the torch path will be used" >&2
fi
echo "install: done ($($PY -c 'import rwf_render, torch; print("rwf-render", rwf_render.__version__, "torch", torch.__version__)'))"
