#!/usr/bin/env bash
# Sets up everything sensei_jax needs on a fresh machine: a virtual environment in .venv with the package
# (editable) and its dependencies, JAX on the CPU. Modes, which combine (`bash scripts/setup.sh gpu test`):
#   test  the test tools and the optional reference implementations (CPU torch, transformers) of the parity tests
#   gpu   the CUDA 13 build of the pinned jax (pyproject's `gpu` extra): the CUDA that warp-lang's wheel is built
#         with, so JAX and MJX-Warp share one CUDA; needs an NVIDIA driver R580 or newer. Ends with `doctor`.
#   tpu   the TPU build of the pinned jax (pyproject's `tpu` extra), on a Cloud TPU VM; the MJX-Warp env does not
#         run on a TPU (docs/scaling.md says what does)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=()
for mode in "$@"; do
  case "$mode" in
    test) extras+=(test parity) ;;
    gpu | tpu) extras+=("$mode") ;;
    *) echo "scripts/setup.sh: unknown mode '$mode' (modes: test, gpu, tpu)" >&2; exit 1 ;;
  esac
done
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "sensei_jax needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
gpu=false
for extra in "${extras[@]}"; do [ "$extra" = gpu ] && gpu=true; done
if $gpu; then
  if driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) && [ -n "$driver" ]; then
    if [ "${driver%%.*}" -lt 580 ]; then
      echo "warning: NVIDIA driver $driver is older than R580, which CUDA 13 (jax's cuda13 plugin, warp-lang's" \
           "wheel) needs; JAX and Warp will not see the GPU until the driver is updated" >&2
    fi
  else
    echo "warning: no NVIDIA driver found (nvidia-smi); the CUDA build installs, but runs on the CPU until an" \
         "NVIDIA driver R580 or newer is there" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
spec=""
[ ${#extras[@]} -gt 0 ] && spec="[$(IFS=,; echo "${extras[*]}")]"
stamp=".venv/.installed${spec}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # --no-compile: pip byte-compiles every file it installs (35 s of a 59 s install on 2 cores, for some 17,000
  # modules, most never imported); Python compiles the few hundred it imports on first use instead.
  .venv/bin/python -m pip install --quiet --no-compile -e ".${spec}"
  touch "$stamp"
fi
if $gpu; then
  .venv/bin/python -m sensei_jax.run doctor
fi
