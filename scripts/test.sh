#!/usr/bin/env bash
# The whole test suite, as CI runs it (the README's test command; .ci/run calls it verbatim).
# 1. Sets up what the tests need beside the project's own environment, each step cached when current:
#    vLLM's CPU build in .venv-vllm/ (scripts/install_vllm.sh, ~3 min the first time) and llama-cpp-python in the
#    active environment (scripts/install_llamacpp.sh, 5-65 min the first time: it compiles llama.cpp).
# 2. Runs pytest with PIXTRAL_QUANT_ALL_TESTS=1: a test that skips for any reason but a missing GPU (marker `gpu`)
#    fails instead (tests/conftest.py), and -rs prints every skip with its reason.
# Usage: bash scripts/test.sh [pytest args]   e.g. bash scripts/test.sh tests/test_wheel.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_vllm.sh
bash scripts/install_llamacpp.sh
echo "CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1); torch: $(python -c 'import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())' 2>/dev/null)"
export CI="${CI:-true}" PIXTRAL_QUANT_ALL_TESTS=1
exec python -m pytest -q -rs "$@"
