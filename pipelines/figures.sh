#!/usr/bin/env bash
# The paper's Figures 2-6 from our own runs (issue #6): run after
#   python -m tf_sharpcf.pipeline pipelines/table2_ml-1m_40ep.toml   --data-dir ../shared/data
#   python -m tf_sharpcf.pipeline pipelines/table2_gowalla_40ep.toml --data-dir ../shared/data
# and the ml-1m validation grids named in those files' [provenance] (tuning/).
# Usage: bash pipelines/figures.sh [RESULTS_DIR] [TUNING_DIR] [OUT_DIR]
set -euo pipefail
results=${1:-results}; tuning=${2:-tuning}; out=${3:-docs/figures}
mkdir -p "$out"
runs() {  # the seed-0 run of each method of experiment $1
  for m in bpr apr sharpcf; do echo "$results/$1/runs/$m-seed0"; done
}
ml=$(runs table2_ml-1m_40ep); gw=$(runs table2_gowalla_40ep)
python -m tf_sharpcf.analyze curves    --runs $ml $gw --out "$out/curves.png"
python -m tf_sharpcf.analyze landscape --runs $ml --out "$out/landscape_ml-1m.png"
python -m tf_sharpcf.analyze landscape --runs $gw --out "$out/landscape_gowalla.png"
python -m tf_sharpcf.analyze longtail  --runs $ml $gw --out "$out/longtail.png"
# Figs. 5 and 6 on ml-1m's validation split (the tuner's trial folders).
python -m tf_sharpcf.analyze sensitivity --runs "$tuning"/ml-1m-sharpcf-lambda/trial_* --param lam \
  --out "$out/sensitivity_lambda_ml-1m.png"
python -m tf_sharpcf.analyze sensitivity --runs "$tuning"/ml-1m-sharpcf-window/trial_* --param window \
  --out "$out/sensitivity_window_ml-1m.png"
