#!/usr/bin/env bash
# Issue 18's GPU benchmarks (bench/RESULTS.md, "GPU"), on a machine with a CUDA jax.
# The data sets come from `python bench/bench_scale.py KIND --seeds S --data-cache .gpu/data
# --simulate-only`, made where the reference data are (they are derived real data: never commit them).
# Usage: bash bench/gpu_run.sh [OUTDIR] [KINDS]   (KINDS: any of checks default stacked years targets)
# targets: issue 30's table (bench/gpu_targets.py): the default fit by NUTS and by chees (128, 512 chains),
# 100 SBC replicates and 151 leave-one-LA-out refits, each batch one compiled program, and the Laplace mode
# with its hyperparameter chains in turn and vectorised; needs
# `python bench/bench_scale.py default --seeds 11 --data-cache .gpu/data --simulate-only` made beforehand.
set -u
out=${1:-${OUT:-/tmp/gpu_bench}}
kinds=${2:-checks default stacked years targets}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
py=${PYTHON:-python3}
common=(--chains 4 --chain-method vectorized --data-cache .gpu/data)
for k in $kinds; do
  case $k in
    checks)  timeout 150 "$py" bench/gpu_checks.py --data-cache .gpu/data ;;
    default) timeout 120 "$py" bench/bench_scale.py default --seeds 11 --tune 500 --draws 1000 --max-draws 3000 \
               "${common[@]}" --json "$out/default.json" ;;
    stacked) timeout 200 "$py" bench/bench_scale.py stacked --seeds 0 --tune 300 --draws 1000 --max-draws 3000 \
               "${common[@]}" --json "$out/stacked.json" ;;
    years)   timeout 200 "$py" bench/bench_scale.py years --seeds 0 --tune 500 --draws 1000 --max-draws 3000 \
               "${common[@]}" --json "$out/years.json" ;;
    targets) for w in fit sbc lolo; do
               timeout 200 "$py" bench/gpu_targets.py "$w" --data-cache .gpu/data
             done ;;
  esac
  echo "[$k exit $?]"
done 2>&1 | tee -a "$out/gpu_run.log"
