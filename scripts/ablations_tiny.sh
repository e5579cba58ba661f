#!/usr/bin/env bash
# The paper's Tables 3-4 in miniature on KeySeg-Tiny: every row starts from the same stage-1 bases
# (runs/keyseg_tiny_bases/final, from `keyseg pretrain --config recipes/keyseg_tiny_bases.yaml`) and
# gets the same 200 stage-2 steps; Table 3's rows with seeds 42 and 7. Each row is evaluated on the
# first 200 scenes of the generated test split, then the table is printed (and written as JSON).
# Needs data/openmoji (recipes/keyseg_tiny.yaml says how); resumable: rerun to continue.
# Usage: scripts/ablations_tiny.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
RUNS=(seg_only:42 seg_sa:42 keyseg:42 ca_only:42 sa_only:42 seg_only:7 seg_sa:7 keyseg:7)
for run in "${RUNS[@]}"; do
  row=${run%%:*} seed=${run##*:}
  out=runs/ablation_tiny_${row}_s${seed}
  report=eval/ablation_tiny/${row}_s${seed}
  if [[ ! -f $out/final/config.json ]]; then
    keyseg train --config "recipes/ablations_tiny/$row.yaml" --set "seed=$seed" --set "output_dir=$out" --resume --no-progress
  fi
  if [[ ! -f $report/report.json ]]; then
    keyseg eval --checkpoint "$out/final" --dataset reasonseg --split test --data-root data/openmoji --limit 200 \
      --output "$report" --no-progress
  fi
done
python scripts/ablation_table.py eval/ablation_tiny --json eval/ablation_tiny/table.json
