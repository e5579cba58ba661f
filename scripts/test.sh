#!/usr/bin/env bash
# Install keyseg into .venv, build the ROS 2 messages, and run the whole test suite (CPU, offline).
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
# Speech tests synthesise spoken queries with espeak-ng (Debian package; they skip without it).
if ! command -v espeak-ng >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
    || echo "test.sh: could not install espeak-ng; the speech tests will be skipped"
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTHON="$(command -v python)" bash scripts/build_ros.sh
keyseg prepare-offline            # converts the offline LLM once (~20 s), cached afterwards
python -m pytest -n 2 --timeout 600 -p no:cacheprovider tests "$@"
