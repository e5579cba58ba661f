#!/usr/bin/env bash
# Install keyseg into .venv and run the main job: segment a photo for a natural-language question.
# Usage: scripts/demo.sh [IMAGE] [QUERY] [--model CKPT ...extra keyseg predict args]
# Without an image it uses a real photo from scikit-image. Output: out/<name>_mask.png, _overlay.png.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
IMAGE="${1:-}"
QUERY="${2:-Which object in this picture is used for drinking coffee?}"
shift $(( $# > 2 ? 2 : $# ))
if [ -z "$IMAGE" ]; then
  IMAGE=out/coffee.jpg
  mkdir -p out
  python -c "from skimage import data; from PIL import Image; Image.fromarray(data.coffee()).save('$IMAGE')"
fi
keyseg predict --image "$IMAGE" --query "$QUERY" --out out "$@"
