#!/bin/sh
# Build inplace-abn 1.1.0 against the torch already installed (it ships only as an sdist).
# Used by docker/Dockerfile and docker/Dockerfile.cpu; the same recipe as `make iabn`.
#   docker/install-iabn.sh               build and install it
#   docker/install-iabn.sh WHEEL_DIR     build a wheel into WHEEL_DIR (multi-stage images)
# CUDA kernels are compiled when nvcc is found (CUDA_HOME, default /usr/local/cuda); else the CPU path only.
set -eu

PIP="${PIP:-python -m pip}"
IABN_VERSION="${IABN_VERSION:-1.1.0}"
here="$(cd "$(dirname "$0")" && pwd)"

$PIP install --no-cache-dir -r "$here/build-requirements.txt"

CUDA_HOME="${CUDA_HOME:-}"
if [ -z "$CUDA_HOME" ] && [ -d /usr/local/cuda ]; then
  CUDA_HOME=/usr/local/cuda
fi
if [ -z "$CUDA_HOME" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  export FORCE_CPU=1
  echo "install-iabn: no nvcc under CUDA_HOME='$CUDA_HOME': building the CPU path only" >&2
fi
export SETUPTOOLS_SCM_PRETEND_VERSION="$IABN_VERSION"
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0}"
export MAX_JOBS="${MAX_JOBS:-4}"

if [ "$#" -ge 1 ]; then
  $PIP wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir "$1" "inplace-abn==$IABN_VERSION"
else
  $PIP install --no-cache-dir --no-build-isolation "inplace-abn==$IABN_VERSION"
fi
