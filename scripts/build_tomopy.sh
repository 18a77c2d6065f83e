#!/usr/bin/env bash
# TomoPy 1.15.2 from source (FFTW, no MKL, no CUDA) as a BENCHMARK-ONLY extra: tomodl never
# imports it outside scripts/bench_fbp.py, and it is not (and must not become) a requirement.
# TomoPy is not on PyPI. It comes in two parts: libtomo (C shared libraries, found at import time
# through ctypes.util.find_library, so they go to a system library directory + ldconfig) and
# the pure-Python package, which goes to its own directory (TARGET) outside tomodl's venv and
# is put on PYTHONPATH only for the benchmark. Needs root for apt-get and the install to PREFIX.
#
#   bash scripts/build_tomopy.sh [SRC]   # SRC: an unpacked tomopy source tree; default: clone
#   PYTHONPATH=/opt/tomopy-py .venv/bin/python scripts/bench_fbp.py --vs-tomopy
#
# Environment: PYTHON (default .venv/bin/python), PREFIX (default /usr/local),
# TARGET (default /opt/tomopy-py), TAG (default 1.15.2), JOBS (default 2).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
PREFIX=${PREFIX:-/usr/local}
TARGET=${TARGET:-/opt/tomopy-py}
TAG=${TAG:-1.15.2}
JOBS=${JOBS:-2}

# 1. Build dependencies (Debian 12). gridrec links fftw3f + fftw3f_threads through pkg-config.
apt-get update
apt-get install -y build-essential cmake ninja-build pkg-config git libfftw3-dev

# 2. Source: a given tree, or a shallow clone of the tag.
SRC=${1:-}
if [ -z "$SRC" ]; then
    SRC=$(mktemp -d)/tomopy
    git clone --depth 1 --branch "$TAG" https://github.com/tomopy/tomopy.git "$SRC"
fi

# 3. libtomo: CMake, FFTW instead of the default MKL, CPU only, installed to PREFIX/lib.
cmake -S "$SRC" -B "$SRC/build" -GNinja -DCMAKE_BUILD_TYPE=Release \
    -DTOMOPY_USE_MKL=OFF -DTOMOPY_USE_CUDA=OFF \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib
cmake --build "$SRC/build" -j "$JOBS"
cmake --install "$SRC/build"
ldconfig

# 4. The Python package, without its pinned dependencies (scipy<1.14, numpy~=1.x pins would
#    downgrade tomodl's venv): only numexpr is missing for `import tomopy` (tomopy.pad uses it).
#    The version comes from git tags; a source archive has none, so it is given explicitly.
SETUPTOOLS_SCM_PRETEND_VERSION="$TAG" "$PYTHON" -m pip install --upgrade --no-deps --target "$TARGET" "$SRC"
"$PYTHON" -m pip install --upgrade --no-deps --target "$TARGET" numexpr

PYTHONPATH="$TARGET" "$PYTHON" -c "import tomopy; print('tomopy', tomopy.__version__, tomopy.__file__)"
