#!/usr/bin/env bash
# Everything that needs a GPU, in one unattended run on a bare machine: sets up Python from the project's files,
# runs each part of benchmarks/gpu/ in its own process under its own timeout (one failing or hanging part does not
# stop the others), keeps the whole run inside a time budget (8 minutes by default) and prints one summary table.
# Each part writes benchmarks/results/gpu_<part>.json; the table is also written as gpu_summary.json.
#
#   bash benchmarks/gpu_suite.sh                 # everything
#   bash benchmarks/gpu_suite.sh --dry-run       # list what would run; writes and installs nothing
#   bash benchmarks/gpu_suite.sh --parts dit,vae --budget 300
#   bash benchmarks/gpu_suite.sh --python python3 --tiny --out gpu-check   # tiny models, any device
#
# Python: $PYTHON (default python3) when it has a CUDA build of torch and every package the parts import;
# otherwise a virtual environment .gpu-venv (over the system packages when their torch has CUDA, so a preinstalled
# torch is reused) where pip installs what is missing: torch (when there is none with CUDA), requirements.txt,
# pytest and onnx. When pip cannot reach an index the suite says so and runs with what is there; each part then
# reports what it misses ("skipped: ...") instead of failing the run. --python PY uses PY as it is (no setup).
set -u
cd "$(dirname "$0")/.."

PARTS_ALL="matmul dit block_swap vae pose_cuda pytest_gpu step_cache compile"
declare -A TIMEOUT=([matmul]=60 [dit]=150 [block_swap]=180 [vae]=90 [pose_cuda]=60 [pytest_gpu]=120
                    [step_cache]=120 [compile]=180)
declare -A ARGS=([matmul]="" [dit]="--repeats 2" [block_swap]="--repeats 1" [vae]="" [pose_cuda]=""
                 [pytest_gpu]="" [step_cache]="" [compile]="--repeats 1")
declare -A WHAT=(
  [matmul]="dense bf16 matmul rate (8192^3) and fp8 _scaled_mm rate"
  [dit]="full-size random DiT forward 832x480x81: bf16, bf16 + context cache, fp8 upcast, fp8 scaled-mm"
  [block_swap]="24 GB cap, planner's choice for fp8 and bf16 weights: peak, s/step vs all-resident"
  [vae]="VAE decode 81x832x480 bf16, untiled and tiled: peak, seconds"
  [pose_cuda]="tiny pose ONNX models on onnxruntime's CUDA provider: does it load, frames/s"
  [pytest_gpu]="pytest -m gpu (the CUDA checks of tests/)"
  [step_cache]="generate() with the step cache off / on (full-size DiT, 480x272x33, 20 steps)"
  [compile]="regional torch.compile of the DiT blocks at 832x480x81: compile time, s/forward, difference")
BUDGET=480
DRY=0
TINY=0
OUT="benchmarks/results"
PARTS="$PARTS_ALL"
PY_GIVEN=""
VENV=".gpu-venv"
PIP_FLAGS="-q --disable-pip-version-check --retries 1 --timeout 15"
CHECK_IMPORTS="torch numpy safetensors cv2 onnxruntime onnx pytest sentencepiece PIL einops tqdm"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --tiny) TINY=1 ;;
    --parts) PARTS="${2//,/ }"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --python) PY_GIVEN="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_suite: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for part in $PARTS; do
  if [ -z "${TIMEOUT[$part]:-}" ]; then
    echo "gpu_suite: unknown part '$part'; parts: $PARTS_ALL" >&2; exit 2
  fi
done
EXTRA=""
RESULT_DIR="$OUT"
if [ "$TINY" = 1 ]; then EXTRA="--tiny"; RESULT_DIR="$OUT/tiny"; fi

if [ "$DRY" = 1 ]; then
  echo "gpu_suite dry run: nothing is installed, run or written. Time budget ${BUDGET}s; results in $RESULT_DIR."
  if [ -n "$PY_GIVEN" ]; then
    echo "setup: use $PY_GIVEN as it is"
  else
    echo "setup: ${PYTHON:-python3} if it has CUDA torch and imports: $CHECK_IMPORTS"
    echo "       else python -m venv $VENV (--system-site-packages when the system torch has CUDA), then"
    echo "       pip install torch (only without a CUDA torch), pip install -r requirements.txt pytest onnx"
  fi
  for part in $PARTS; do
    echo "part $part (timeout ${TIMEOUT[$part]}s): ${WHAT[$part]}"
    echo "    PY benchmarks/gpu/$part.py --out $OUT ${ARGS[$part]} $EXTRA"
  done
  echo "summary: PY benchmarks/gpu/summary.py --parts ${PARTS// /,} --out $RESULT_DIR  (prints the table, writes gpu_summary.json)"
  exit 0
fi

START=$SECONDS
log() { echo "[gpu_suite $((SECONDS - START))s] $*"; }

has_cuda_torch() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }
missing_imports() {
  "$1" - $CHECK_IMPORTS <<'EOF' 2>/dev/null || echo "python"
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}

SETUP=""
setup_python() {
  if [ -n "$PY_GIVEN" ]; then PY="$PY_GIVEN"; SETUP="given interpreter $PY"; return; fi
  local base="${PYTHON:-python3}" site="" missing
  if has_cuda_torch "$base"; then
    missing="$(missing_imports "$base")"
    if [ -z "$missing" ]; then PY="$base"; SETUP="$base as installed"; return; fi
    site="--system-site-packages"
    log "$base has CUDA torch; missing: $missing -> venv $VENV over its packages"
  else
    log "$base has no CUDA build of torch -> venv $VENV with pip install torch"
  fi
  if [ ! -x "$VENV/bin/python" ] && ! "$base" -m venv $site "$VENV"; then
    log "could not create $VENV (python3 -m venv failed); running with $base as it is"
    PY="$base"; SETUP="$base (venv failed)"; return
  fi
  PY="$VENV/bin/python"
  if ! has_cuda_torch "$PY"; then
    if ! timeout 300 "$PY" -m pip install $PIP_FLAGS torch; then
      log "pip install torch FAILED (no package index reachable?): the GPU parts will report no CUDA"
    fi
  fi
  if ! timeout 240 "$PY" -m pip install $PIP_FLAGS -r requirements.txt pytest onnx; then
    log "pip install -r requirements.txt pytest onnx FAILED (no package index reachable?); still missing:" \
        "$(missing_imports "$PY"); parts that need them say so"
  fi
  SETUP="$PY ($( "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null \
          || echo 'no torch'))"
}

setup_python
log "python: $SETUP"
export PYTHONUNBUFFERED=1
mkdir -p "$RESULT_DIR"
RCS=()
for part in $PARTS; do
  rm -f "$RESULT_DIR/gpu_$part.json"
  left=$((BUDGET - (SECONDS - START) - 15))
  if [ "$left" -lt 20 ]; then
    log "part $part: skipped, the ${BUDGET}s budget is spent"
    RCS+=("--rc" "$part=skip"); continue
  fi
  limit=${TIMEOUT[$part]}
  [ "$limit" -gt "$left" ] && limit=$left
  log "part $part (limit ${limit}s): ${WHAT[$part]}"
  # shellcheck disable=SC2086  # ARGS and EXTRA are lists of options
  timeout -k 10 "$limit" "$PY" "benchmarks/gpu/$part.py" --out "$OUT" ${ARGS[$part]} $EXTRA
  rc=$?
  [ "$rc" != 0 ] && log "part $part exited with code $rc"
  RCS+=("--rc" "$part=$rc")
done

echo
log "summary (${BUDGET}s budget)"
if "$PY" benchmarks/gpu/summary.py --parts "${PARTS// /,}" --out "$RESULT_DIR" --setup "$SETUP" "${RCS[@]}"; then
  exit 0
fi
status=$?
if [ "$status" -gt 1 ]; then   # the summary itself could not run: print the exit codes
  for ((i = 1; i < ${#RCS[@]}; i += 2)); do echo "  ${RCS[$i]}"; done
fi
exit 1
