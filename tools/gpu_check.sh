#!/usr/bin/env bash
# make gpu-check: the whole GPU check in one call, for a GPU machine that has torch,
# nvcc and no network (see the README, "On a GPU"). Usage:
#   tools/gpu_check.sh <python> <out dir> <build dir>
# Steps, each with its own time limit so that the whole fits an 8-minute window on
# a 16-core machine: build with every core for sm_90, pytest (CPU and CUDA, the
# large-tensor tests included), GoogleTest on CPU and on CUDA tensors, the C++
# example on CUDA, then the benchmark's headline cases with whatever time is left.
# Everything lands in <out dir>, at most 8 files (what the device tool brings back):
#   summary.txt  one line per step (last lines of the console too)
#   check.log    the environment and every step's full output
#   pytest.xml   JUnit results of pytest
#   ptxas.txt    registers, spills and shared memory per kernel (nvcc -Xptxas -v)
#   bench.csv, bench.md, bench.png   the benchmark's results
# GPU_CHECK_DRY_RUN=1 runs the same steps on a machine without a GPU (CPU tests only,
# a small CPU benchmark): a check of this script, not of the CUDA kernels.
set -uo pipefail
PY=${1:?python} OUT=${2:?out dir} BUILD=${3:?build dir}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$OUT" "$BUILD"
LOG="$OUT/check.log" SUMMARY="$OUT/summary.txt"
: > "$LOG"
: > "$SUMMARY"
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds for the whole check
START=$SECONDS
failures=0

note() { echo "[gpu-check +$((SECONDS - START))s] $*" | tee -a "$SUMMARY" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# step <name> <limit s> <command...>: runs with a time limit, logs, records the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  local out="$BUILD/step.out"
  echo "===== $name (limit ${limit}s): $*" >> "$LOG"
  timeout -s INT -k 10 "$limit" "$@" > "$out" 2>&1
  local rc=$?
  cat "$out" >> "$LOG"
  # the test runners' own one-line tallies, for the summary
  grep -E "^=* ?[0-9]+ (passed|failed)|^\[  (PASSED|FAILED)  \]|tests? ran" "$out" | tail -n 2 | sed "s/^/  $name: /" >> "$SUMMARY"
  [ $rc -eq 0 ] || failures=$((failures + 1))
  note "$name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))") in $((SECONDS - t0)) s"
  return $rc
}

{
  echo "===== environment"
  date -u
  nvidia-smi 2>&1 | head -15
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  nvcc --version | tail -2
  echo "cores: $(nproc)"
} >> "$LOG" 2>&1

export MAX_JOBS=$(nproc) TORCH_CUDA_ARCH_LIST=9.0 FUSEDNORM_WITH_CUDA=1
export FUSEDNORM_PTXAS_VERBOSE=1  # setup.py adds -Xptxas -v; the report is cut out below
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
step build 300 "$PY" setup.py -q build_ext --inplace --force --build-temp "$BUILD/ext" || {
  tail -n 60 "$LOG"
  exit 1
}
grep -E "ptxas info|Compiling entry|spill" "$LOG" > "$OUT/ptxas.txt"

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then
  note "dry run: no GPU needed, CUDA steps skipped"
else
  step "torch sees the GPU and the CUDA kernels" 60 "$PY" -c "import torch, fusednorm, sys; \
sys.exit(0 if torch.cuda.is_available() and fusednorm.has_cuda_kernels() else 1)" || exit 1
fi

XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 8)
step pytest 240 "$PY" -m pytest -q -ra "${XDIST[@]}" tests/python --junitxml="$OUT/pytest.xml"

FUSEDNORM_CMAKE_DIR="$ROOT/python/fusednorm/share/cmake/FusedNorm"
TORCH_PREFIX=$("$PY" -c "import torch; print(torch.utils.cmake_prefix_path)")
cmake_build() {  # <source> <build>
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DFusedNorm_DIR="$FUSEDNORM_CMAKE_DIR" \
    -DFUSEDNORM_GTEST_SOURCE_DIR="$ROOT/.deps/googletest" && cmake --build "$2" -j "$(nproc)"
}
if step "googletest build" 120 cmake_build tests/cpp "$BUILD/cpp-tests"; then
  step "googletest cpu" 120 "$BUILD/cpp-tests/fusednorm_cpp_tests" --gtest_brief=1
  [ "$DRY_RUN" = 1 ] || step "googletest cuda" 120 env FUSEDNORM_TEST_DEVICE=cuda "$BUILD/cpp-tests/fusednorm_cpp_tests" --gtest_brief=1
fi
if step "example build" 90 cmake_build examples/cpp "$BUILD/cpp-example"; then
  step "example" 60 "$BUILD/cpp-example/train_cnn" "$([ "$DRY_RUN" = 1 ] && echo cpu || echo cuda)"
fi

remaining=$(left)
if [ "$remaining" -gt 60 ]; then
  mkdir -p "$BUILD/bench"
  BENCH=(--headline --device cuda)
  [ "$DRY_RUN" = 1 ] && BENCH=(--quick --device cpu --case bn1d --no-compile)
  step bench "$remaining" "$PY" -m fusednorm.bench "${BENCH[@]}" --out "$BUILD/bench" --time-budget $((remaining - 30))
  for f in csv md png; do
    [ -f "$BUILD/bench/results.$f" ] && cp "$BUILD/bench/results.$f" "$OUT/bench.$f"
  done
  [ -f "$OUT/bench.md" ] && tail -n 40 "$OUT/bench.md"
else
  note "bench: skipped, ${remaining}s left"
fi
note "done: $failures step(s) failed, $((SECONDS - START)) s in all"
cat "$SUMMARY"
[ "$failures" -eq 0 ]
