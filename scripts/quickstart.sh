#!/usr/bin/env bash
# Set up, then run the quickstart: build (or reuse) the offline tiny base model, evaluate it, train it with GRPO,
# evaluate again, and print before/after held-out accuracy. Extra arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m verity.cli train examples/quickstart.yaml "$@"
