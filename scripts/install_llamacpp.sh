#!/usr/bin/env bash
# Build and install llama-cpp-python 0.3.36 (llama.cpp 0c1e57098 + mtmd, CPU) into the active environment, for the
# GGUF tests and `validate --engine llama.cpp`. PyPI has it only as an sdist: pip compiles llama.cpp with cmake.
# Measured on this machine kind (2 cores): 4.9-8.2 min. A no-op when that version is already installed.
#
# Flags: GGML_NATIVE=OFF, i.e. ggml's portable x86-64 set (AVX, AVX2, FMA, F16C): with -march=native on this
# machine's Xeon (AMX), llama.cpp 0c1e57098 repacks K-quant weights for AMX and then segfaults in the first
# llama_decode of a Q4_K_M model (F16 runs; `use_extra_bufts=False` avoids it too, so it is the AMX path). No BLAS
# (none on the machine; llama.cpp's own kernels are used), no OpenSSL (llama.cpp's HTTP model download, unused
# here and its headers are absent). --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS, so a wheel built
# with other flags would be reused.
# Usage: bash scripts/install_llamacpp.sh   (PYTHON=... to install for another interpreter)
set -euo pipefail
python="${PYTHON:-python}"
version="0.3.36"
if "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$version')" 2>/dev/null; then
    echo "llama-cpp-python $version already installed"
    exit 0
fi
start=$SECONDS
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAMA_OPENSSL=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip install -q --no-cache-dir "llama-cpp-python==$version"
echo "llama-cpp-python $version installed in $((SECONDS - start)) s"
