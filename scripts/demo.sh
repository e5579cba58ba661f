#!/usr/bin/env bash
# Fresh machine -> the main job: install keyseg into .venv, build the keyseg_ros ROS 2 package, then
# run `keyseg demo`: keyseg_node answers reasoning queries about generated scenes streamed as a
# camera, and the demo prints a table (query, expected and published keyword, IoU, latency) and
# writes overlays, a contact sheet and summary.json/.csv to out/demo/.
# Usage: scripts/demo.sh [keyseg demo options: --model CKPT --queries N --rate HZ --out DIR --seed S ...]
# No network after the install, no GPU; about a minute on 2 CPU cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
mkdir -p build
bash scripts/build_ros.sh > build/demo_build_ros.log 2>&1 || {
  tail -n 40 build/demo_build_ros.log >&2
  echo "demo.sh: building the ROS package failed (full log: build/demo_build_ros.log)" >&2
  exit 1
}
echo "demo.sh: built the keyseg_ros ROS 2 package into install/"
exec keyseg demo "$@"
