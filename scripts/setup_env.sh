#!/usr/bin/env bash
# Create .venv and install spurbench with everything the tests and the CPU quickstart use
# (the builder stack, the offline classifiers, pytest). Safe to re-run: it skips what is done.
#   PYTHON=python3.11        interpreter for the venv
#   SPURBENCH_VENV=.venv     where the venv lives
#   SPURBENCH_TORCH="torch==2.14.1 torchvision==0.29.1"   the torch pair to install if none is there
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPURBENCH_VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip, quietly; drops the "Location ... is ignored" lines some machines' pip configurations print per package
pip_install() {
  local log rc=0
  log=$(mktemp)
  python -m pip install -q "$@" >"$log" 2>&1 || rc=$?
  grep -v "^WARNING: Location '.*' is ignored" "$log" || true
  rm -f "$log"
  return "$rc"
}
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  # torch and torchvision must come as a matching pair; this pair is the one this workplace has on disk.
  echo "[setup] installing ${SPURBENCH_TORCH:-torch==2.14.1 torchvision==0.29.1} (a few minutes the first time)"
  # shellcheck disable=SC2086
  pip_install ${SPURBENCH_TORCH:-torch==2.14.1 torchvision==0.29.1}
fi
stamp="$VENV/.spurbench-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! python -c "import spurbench" >/dev/null 2>&1; then
  echo "[setup] installing spurbench[test] (editable) and its dependencies"
  pip_install -e ".[test]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $(python -c 'import torch, timm, datasets; print(f"torch {torch.__version__}, timm {timm.__version__}, datasets {datasets.__version__}")')"
