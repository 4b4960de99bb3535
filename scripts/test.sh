#!/usr/bin/env bash
# Set up (with the CPU build of vLLM unless VERITY_VLLM=0), then run the whole test suite (slow and security
# tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VERITY_VLLM=${VERITY_VLLM:-1} bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
