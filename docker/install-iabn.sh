#!/bin/sh
# Build inplace-abn (an sdist only) against the torch already installed, from the lock:
# requirements/build.lock (setuptools, setuptools-scm, wheel, ninja) and requirements/iabn.lock (the
# sdist's hash). Used by `make iabn`, docker/Dockerfile and docker/Dockerfile.cpu.
#   docker/install-iabn.sh               build and install it
#   docker/install-iabn.sh WHEEL_DIR     build a wheel into WHEEL_DIR (multi-stage images)
# CUDA kernels are compiled when nvcc is found (CUDA_HOME, default /usr/local/cuda), for
# TORCH_CUDA_ARCH_LIST (default: what the images build, see docker/Dockerfile); else the CPU path only.
set -eu

PIP="${PIP:-python -m pip}"
here="$(cd "$(dirname "$0")" && pwd)"
locks="${CDSEG_LOCKS:-$here/../requirements}"

$PIP install --no-cache-dir --require-hashes --no-deps -r "$locks/build.lock"

CUDA_HOME="${CUDA_HOME:-}"
if [ -z "$CUDA_HOME" ] && [ -d /usr/local/cuda ]; then
  CUDA_HOME=/usr/local/cuda
fi
if [ -z "$CUDA_HOME" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  export FORCE_CPU=1
  echo "install-iabn: no nvcc under CUDA_HOME='$CUDA_HOME': building the CPU path only" >&2
fi
# the sdist carries no git metadata for setuptools-scm
export SETUPTOOLS_SCM_PRETEND_VERSION="$(sed -n 's/^inplace-abn==\([^ ]*\).*/\1/p' "$locks/iabn.lock")"
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-7.5;8.0;8.6;8.9;9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-4}"

if [ "$#" -ge 1 ]; then
  $PIP wheel --no-cache-dir --no-build-isolation --no-deps --require-hashes --wheel-dir "$1" -r "$locks/iabn.lock"
else
  $PIP install --no-cache-dir --no-build-isolation --no-deps --require-hashes -r "$locks/iabn.lock"
fi
