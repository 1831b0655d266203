#!/usr/bin/env bash
# The GPU measurements of the sweep, in one prepared run (about 10 minutes on one H100).
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [stage ...]
#
# Stages (all by default, in this order, the yardstick first; each writes its own files under
# OUT_DIR, so a run cut short keeps what finished). Where one command may run at most 10
# minutes, give one or two stages per command (seed001 takes about 5-6 minutes on an H100):
#   seed001  benchmarks/sweep_vs_torch.py --device gpu --workload seed-001 (fp32 "highest" and
#            TF32): the grid per width and as one program, FLOP-ceiling shares, the SGD step
#            folded into the weight-gradient product (--sgd-update folded) against the generic
#            one, the PyTorch ways (baselines measured over 300 steps of every run and
#            extrapolated)
#   digits   the default `python -m jaxlr.sweep` (digits): whole-process wall time cold (a new
#            compilation cache) and warm (the same cache), all widths in one program
#            (--fuse auto) and one program per width (--fuse off), and whether the two give the
#            same results.csv bytes
#   tests    the engine, transform and scale tests on the GPU
#
# Run from the repository root (PYTHONPATH=. is set here). Copy OUT_DIR's *.md / *.json into
# benchmarks/results/ afterwards.
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [seed001|digits|tests ...]}"
shift
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(seed001 digits tests)
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
LOG="$OUT/gpu_checks.log"
say() { echo "$*" | tee -a "$LOG"; }

say "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
python -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$LOG"

timed() {  # timed NAME CMD...: whole-process wall time of CMD, in seconds, into the log
  local name="$1"; shift
  local t0 t1 rc
  t0=$(date +%s.%N)
  "$@" >"$OUT/$name.out" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  say "$name: $(python -c "print(f'{$t1 - $t0:.1f}')") s (exit $rc)"
}

for stage in "${STAGES[@]}"; do
  case "$stage" in
    digits)
      for fuse in auto off; do
        cache="$OUT/cache-$fuse"
        rm -rf "$cache"
        JAXLR_COMPILATION_CACHE="$cache" timed "digits-$fuse-cold" \
          python -m jaxlr.sweep --no-progress --fuse "$fuse" --out "$OUT/digits-$fuse-cold"
        JAXLR_COMPILATION_CACHE="$cache" timed "digits-$fuse-warm" \
          python -m jaxlr.sweep --no-progress --fuse "$fuse" --out "$OUT/digits-$fuse-warm"
      done
      if cmp -s "$OUT/digits-auto-cold/results.csv" "$OUT/digits-off-cold/results.csv"; then
        say "digits: one program and one program per width give the same results.csv bytes"
      else
        say "digits: results.csv differs between --fuse auto and off (max rel. diff below)"
        python - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import sys, numpy as np, pandas as pd
a = pd.read_csv(f"{sys.argv[1]}/digits-auto-cold/results.csv")
b = pd.read_csv(f"{sys.argv[1]}/digits-off-cold/results.csv")
for c in ("train_loss", "test_loss"):
    x, y = a[c].to_numpy(), b[c].to_numpy()
    ok = np.isfinite(x) & np.isfinite(y)
    print(c, float(np.max(np.abs(x[ok] - y[ok]) / np.abs(y[ok]))))
EOF
      fi
      ;;
    seed001)
      timed seed001 python benchmarks/sweep_vs_torch.py --device gpu --workload seed-001 \
        --precision highest,tensorfloat32 --sgd-update generic,folded --baseline-steps 300 --torch-func \
        --out "$OUT/gpu_sweep_vs_torch.md" --note "benchmarks/gpu_checks.sh"
      tail -n 40 "$OUT/seed001.out" >>"$LOG"
      ;;
    tests)
      timed tests python -m pytest -q -p no:cacheprovider -x \
        tests/test_engine.py tests/test_transforms.py tests/test_plan.py \
        "tests/test_scale.py::test_fused_programs_equal_separate_programs_and_resume" \
        "tests/test_scale.py::test_kill9_then_resume_gives_identical_results"
      tail -n 5 "$OUT/tests.out" >>"$LOG"
      ;;
    *)
      say "unknown stage $stage (seed001, digits, tests)"
      exit 2
      ;;
  esac
done
say "# done $(date -u +%FT%TZ)"
