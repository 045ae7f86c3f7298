#!/usr/bin/env bash
# `make lock`: regenerate every lock in requirements/ with pip-compile (pip-tools), which resolves with
# this machine's pip configuration (its local wheel index holds the pinned torch builds) and writes
# sha256 hashes. Run from the repository root. Newest versions within pyproject's ranges are taken
# (--upgrade); pass LOCK_UPGRADE= to keep the current pins where they still fit.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK_COMPILER="${LOCK_COMPILER:-pip-compile}"
PIP="${LOCK_PIP:-.venv/bin/pip}"
upgrade="${LOCK_UPGRADE---upgrade}"
export CUSTOM_COMPILE_COMMAND="make lock"
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links)

# 1. the development set (runtime + [dev]): what `make setup` and CI install
"$LOCK_COMPILER" "${common[@]}" $upgrade --extra dev -c requirements/pins.txt -o requirements/dev.lock pyproject.toml
# 2. the runtime set for the images, at exactly the versions of dev.lock
"$LOCK_COMPILER" "${common[@]}" -c requirements/dev.lock -o requirements/runtime.lock pyproject.toml
# 3. the tools that build inplace-abn (and cdseg's editable install), at dev.lock's versions where it has them
"$LOCK_COMPILER" "${common[@]}" $upgrade -o requirements/build.lock requirements/build.in
# 4. inplace-abn's sdist: its version from pyproject's [iabn] extra, its hash from the downloaded file.
#    pip reads the sdist's metadata by running its setup.py, which imports torch: the project's venv
#    (make setup) has it.
version=$(sed -n 's/.*"inplace-abn==\([^"]*\)".*/\1/p' pyproject.toml)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! SETUPTOOLS_SCM_PRETEND_VERSION="$version" "$PIP" download --quiet --no-deps --no-binary :all: \
    --no-build-isolation --dest "$tmp" "inplace-abn==$version"; then
  echo "make lock: could not download inplace-abn $version's sdist with $PIP (run make setup first);" \
       "requirements/iabn.lock left as it was" >&2
  exit 1
fi
sdist=$(ls "$tmp"/*.tar.gz)
hash=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$sdist")
cat > requirements/iabn.lock <<LOCK
# inplace-abn ships only as an sdist: it is built with --no-build-isolation against the torch of
# dev.lock / runtime.lock (make iabn, docker/install-iabn.sh). Hash of the sdist written by \`make lock\`.
inplace-abn==$version \\
    --hash=sha256:$hash
LOCK
# 5. the CPU image's lock: runtime.lock without the CUDA-only packages, and the CPU torch builds' pins
python3 requirements/cpu_lock.py
echo "locks written: requirements/{dev,runtime,runtime-cpu,build,iabn}.lock and torch-cpu.txt; now run: make setup && make check"
