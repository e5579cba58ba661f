#!/usr/bin/env bash
# Build the keyseg_ros ROS 2 package (messages, service, node, launch and config files) into
# build/ and install/ at the repository root, and, where the real vision_msgs is not installed
# (the ROS 2 PyPI wheels have none), the wire-compatible vision_msgs in interfaces/vision_msgs.
#
# Works both on a ROS 2 install (source /opt/ros/<distro>/setup.bash first) and in a Python
# virtual environment that holds the ROS 2 Jazzy PyPI wheels (pip install -e '.[ros]'), where it
# applies the fixes those wheels need (docs/ros.md, "Building"):
#   1. their CMake files name the wheel builder's Python and numpy include directories; rewrite
#      them to this interpreter's (idempotent),
#   2. point AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH at the environment,
#   3. hand CMake the interpreter explicitly (-DPython3_EXECUTABLE).
#
# One build at a time: the script holds an exclusive lock on build/.build_ros.lock while it
# builds, so concurrent runs (scripts/demo.sh, the test session's ensure_built, a manual build)
# take turns instead of writing build/ and install/ together. The test harness takes its own lock
# (build/.keyseg_ros_build.lock, around its up-to-date check) before calling this script; the order
# is always that one, then this one, so the two never deadlock.
#
# Usage: scripts/build_ros.sh [extra colcon build arguments]
# Environment: PYTHON (default: python3 on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"
PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"

# The lock: flock(2) on fd 9, taken by a child Python (no util-linux `flock` needed). A flock lock
# belongs to the open file, which this shell keeps open on fd 9, so it is held until the script
# exits (or is killed). colcon gets fd 9 closed, so nothing it leaves behind can hold the lock.
mkdir -p "$ROOT/build"
LOCK="$ROOT/build/.build_ros.lock"
exec 9>>"$LOCK"
"$PYTHON" - "$LOCK" <<'PY'
import fcntl
import sys

try:
    fcntl.flock(9, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print(f"build_ros.sh: another build holds {sys.argv[1]}; waiting for it", flush=True)
    fcntl.flock(9, fcntl.LOCK_EX)
PY

if [ -z "${ROS_DISTRO:-}" ] && [ -d "$PREFIX/share/ament_cmake" ]; then
  # ROS 2 from PyPI wheels inside this environment.
  PY_INCLUDE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INCLUDE="$("$PYTHON" -c 'import numpy; print(numpy.get_include())')"
  PY_VER="$("$PYTHON" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')"
  # Fix 1. The wheels were built under /opt/python/<tag>/; only .cmake files matter here.
  mapfile -t stale < <(grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$PREFIX/share" || true)
  for f in "${stale[@]}"; do
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NP_INCLUDE}#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/${PY_VER}#${PY_INCLUDE}#g" \
      "$f"
  done
  [ "${#stale[@]}" -eq 0 ] || echo "build_ros.sh: fixed include paths in ${#stale[@]} CMake files under $PREFIX/share"
  # Fix 2.
  export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PATH="$PREFIX/bin:$PATH"
fi

cd "$ROOT"
# CMake refuses exported include directories inside the package's source folder, and a virtual
# environment at the repository root (.venv) is inside it. So build from a staged copy of the
# package's own files (small; refreshed on every build so deleted files disappear too).
STAGE="$ROOT/build/src/keyseg_ros"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -r package.xml CMakeLists.txt msg srv launch config "$STAGE/"
mkdir -p "$STAGE/keyseg_ros"
# the keyseg_ros package's sources, subpackages (node/, tools/, tools/demo/) included
(cd keyseg_ros && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} "$STAGE/keyseg_ros/" \;)
# install(DIRECTORY) never deletes: drop the keyseg_ros sources an earlier build installed, so a
# module that moved or was removed can not linger (the generated message modules stay).
SITE_ROS="$ROOT/install/lib/$("$PYTHON" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages/keyseg_ros"
if [ -d "$SITE_ROS" ]; then
  find "$SITE_ROS" -maxdepth 1 -name '*.py' -not -name '__init__.py' -delete
  rm -rf "$SITE_ROS/node" "$SITE_ROS/tools"
fi
# vision_msgs: the real package when any prefix of this environment has it, else ours.
BASE_PATHS=("$STAGE")
rm -rf "$ROOT/build/src/vision_msgs"
vision_msgs_prefix=""
IFS=: read -r -a prefixes <<< "${AMENT_PREFIX_PATH:-}"
for prefix in "${prefixes[@]}"; do
  if [ -n "$prefix" ] && [ "$prefix" != "$ROOT/install" ] && [ -f "$prefix/share/vision_msgs/package.xml" ]; then
    vision_msgs_prefix="$prefix"
    break
  fi
done
if [ -z "$vision_msgs_prefix" ]; then
  cp -r interfaces/vision_msgs "$ROOT/build/src/vision_msgs"
  BASE_PATHS+=("$ROOT/build/src/vision_msgs")
  echo "build_ros.sh: vision_msgs is not installed; building the wire-compatible one in interfaces/vision_msgs"
else
  echo "build_ros.sh: using vision_msgs from $vision_msgs_prefix"
fi
# Fix 3 (harmless on a ROS install).
"$PYTHON" -m colcon build \
  --base-paths "${BASE_PATHS[@]}" \
  --build-base build \
  --install-base install \
  --merge-install \
  --event-handlers console_cohesion- summary- \
  --cmake-args -DPython3_EXECUTABLE="$PYTHON" -DBUILD_TESTING=OFF \
  "$@" 9>&-
echo "build_ros.sh: built keyseg_ros (and vision_msgs where needed) into $ROOT/install (source install/setup.bash to use it)"
