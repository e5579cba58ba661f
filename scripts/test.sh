#!/usr/bin/env bash
# Install keyseg into .venv, build the ROS 2 messages, and run the whole test suite (CPU, offline).
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTHON="$(command -v python)" bash scripts/build_ros.sh
keyseg prepare-offline            # converts the offline LLM once (~20 s), cached afterwards
python -m pytest -n 2 --timeout 600 -p no:cacheprovider tests "$@"
