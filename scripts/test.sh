#!/usr/bin/env bash
# Install what the tests need (scripts/setup_env.sh), then run the whole suite offline.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k metrics -x`.
# `bash scripts/test.sh --quick` runs the fast tests only (`-m "not slow"`); the whole suite is what CI runs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
# shellcheck disable=SC1091
. "${SPURBENCH_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# lint and format first (configured in pyproject.toml, as timm and diffusers do): cheap, and a failure names the line
ruff check . || exit 1
ruff format --check . || { echo "error: run \`ruff format .\` to format the files listed above" >&2; exit 1; }
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
python -m pytest "${args[@]}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
