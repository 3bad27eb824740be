#!/usr/bin/env bash
# Run an ablation config on a GPU machine and leave everything in one folder:
#
#   experiments/gpu/run.sh CONFIG OUT_DIR [winnow ablation options, e.g. --scale 2m]
#
# 1. the environment: reuses $WINNOW_PYTHON or ./.venv when it imports winnow and torch; else builds .venv --
#    on a machine without a package index from the system Python's own torch (CUDA) and packages
#    (--system-site-packages; winnow itself installs offline), else with `make install TORCH_SPEC=` (keeps a
#    torch you installed) or plain `make install`. On a GPU machine whose chosen torch cannot see the GPU it
#    switches to the system's CUDA torch (.venv-gpu) or stops (WINNOW_ALLOW_CPU=1 runs on the CPU anyway);
# 2. the device: nvidia-smi and torch's view of it -> OUT_DIR/device.txt;
# 3. the grid: `winnow ablation CONFIG --out-dir OUT_DIR` (resumes; per-run results in OUT_DIR/runs/*), its log in
#    OUT_DIR/ablation.log, wall and CPU time in OUT_DIR/time.txt;
# 4. the report: OUT_DIR/report.md (+ PNGs), `winnow check OUT_DIR`, and OUT_DIR/results/: the exported folder
#    small enough to commit (no checkpoints, no models), from which `winnow report` rebuilds the report.
# Exit status: that of the first step that failed.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
CONFIG=$1
OUT=$2
shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

works() { "$1" -c "import experiments.cli, torch, transformers, tokenizers" >/dev/null 2>&1; }
PY=${WINNOW_PYTHON:-}
if [ -n "$PY" ] && ! works "$PY"; then
  echo "run.sh: WINNOW_PYTHON=$PY cannot import winnow and torch" >&2
  exit 3
fi
if [ -z "$PY" ] && [ -x .venv/bin/python ] && works .venv/bin/python; then
  PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
  if python3 -c "import torch, transformers, tokenizers, pyarrow, scipy" >/dev/null 2>&1; then
    echo "run.sh: building .venv on the system's torch ($(python3 -c 'import torch; print(torch.__version__)'))" >&2
    python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --no-deps --no-build-isolation -e . \
      || .venv/bin/pip install -q --no-deps -e .
  elif python3 -c "import torch" >/dev/null 2>&1; then
    make install TORCH_SPEC=
  else
    make install
  fi
  PY=.venv/bin/python
fi
# a GPU machine with an environment whose torch cannot see the GPU (a CPU wheel carried over): use the system's
# CUDA torch in a second environment rather than train on the CPU without a word
cuda_ok() { "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }
if command -v nvidia-smi >/dev/null 2>&1 && ! cuda_ok "$PY"; then
  echo "run.sh: $PY's torch does not see the GPU" >&2
  if cuda_ok python3; then
    [ -x .venv-gpu/bin/python ] || { python3 -m venv --system-site-packages .venv-gpu \
      && (.venv-gpu/bin/pip install -q --no-deps --no-build-isolation -e . || .venv-gpu/bin/pip install -q --no-deps -e .); }
    PY=.venv-gpu/bin/python
    works "$PY" || { echo "run.sh: the system's torch sees the GPU but winnow's other dependencies are missing" >&2; exit 3; }
  elif [ -z "${WINNOW_ALLOW_CPU:-}" ]; then
    echo "run.sh: no torch here sees the GPU; install a CUDA build, or set WINNOW_ALLOW_CPU=1 to run on the CPU" >&2
    exit 3
  fi
fi
WINNOW="$PY -m experiments.cli"

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt" >&2

start=$(date +%s)
set +e
TIMER=()
[ -x /usr/bin/time ] && TIMER=(/usr/bin/time -v -o "$OUT/time.txt")
"${TIMER[@]}" $WINNOW ablation "$CONFIG" --out-dir "$OUT" --no-report "$@" 2> >(tee "$OUT/ablation.log" >&2)
status=$?
set -e
echo "wall seconds: $(( $(date +%s) - start ))" >> "$OUT/time.txt"
[ $status -eq 0 ] || { echo "run.sh: the ablation failed (exit $status); rerun to resume" >&2; exit $status; }
$WINNOW report "$OUT" --command "experiments/gpu/run.sh $CONFIG OUT_DIR $*"
$WINNOW check "$OUT"
$WINNOW report "$OUT" --export "$OUT/results" --command "experiments/gpu/run.sh $CONFIG OUT_DIR $*" >/dev/null
echo "run.sh: report $OUT/report.md; results to commit: $OUT/results" >&2
