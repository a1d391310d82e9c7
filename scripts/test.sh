#!/usr/bin/env bash
# Set up, then run the test suite (all tests, slow ones included, unless arguments say otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FINETUNER_DATA=${FINETUNER_DATA:-$(cd .. && pwd)/shared/data}
exec .venv/bin/python -m pytest "$@"
