#!/usr/bin/env bash
# The paper's Tables 3-4 in miniature on KeySeg-Tiny: every row starts from the same stage-1 bases
# (runs/keyseg_tiny_bases/final, from `keyseg pretrain --config recipes/keyseg_tiny_bases.yaml`) and
# gets the same 200 stage-2 steps; Table 3's rows with seeds 42 and 7. Each row is evaluated on the
# first 200 scenes of the generated test split, then the table is printed (and written as JSON).
# Needs data/openmoji (recipes/keyseg_tiny.yaml says how); resumable: rerun to continue.
# With "v2": the same rows on the v2 recipe (recipes/ablations_tiny_v2/: the v2 bases from
# scripts/train_gpu.sh, SAM kept, a codebook fusion, 300 steps), evaluated without the category gate.
# Usage: scripts/ablations_tiny.sh [v2]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
case ${1:-v1} in
  v1) recipes=ablations_tiny runs=ablation_tiny ;;
  v2) recipes=ablations_tiny_v2 runs=ablations_tiny_v2 ;;
  *) echo "ablations_tiny.sh: '$1' is not v1 or v2" >&2; exit 2 ;;
esac
RUNS=(seg_only:42 seg_sa:42 keyseg:42 ca_only:42 sa_only:42 seg_only:7 seg_sa:7 keyseg:7)
for run in "${RUNS[@]}"; do
  row=${run%%:*} seed=${run##*:}
  out=runs/${runs}_${row}_s${seed}
  report=eval/$runs/${row}_s${seed}
  if [[ ! -f $out/final/config.json ]]; then
    keyseg train --config "recipes/$recipes/$row.yaml" --set "seed=$seed" --set "output_dir=$out" --resume --no-progress
  fi
  if [[ ! -f $report/report.json ]]; then
    keyseg eval --checkpoint "$out/final" --dataset reasonseg --split test --data-root data/openmoji --limit 200 \
      --output "$report" --no-progress --no-category-gate
  fi
done
python scripts/ablation_table.py "eval/$runs" --json "eval/$runs/table.json"
