#!/usr/bin/env bash
# Issue #9's throughput benchmark, one command (one device call, under 9 minutes by default):
#   bash benchmarks/throughput/run.sh OUTDIR
# builds the candidate set (make_set.py), runs `kforge run` on it with the local executor, then the
# one-process-per-candidate baseline (baseline.py) on a stratified subset, and prints the figures
# last (also OUTDIR/throughput.json). Settings by environment: see bench.py's docstring, e.g.
#   MODE=split SHAPES=main MAX_TIMING_S=1 MAX_SAMPLES=50 COMPILE_WORKERS=14 TOTAL_S=540 ...
#   PART=kforge / PART=baseline run one side (then: python benchmarks/throughput/bench.py --summarise DIR1 DIR2)
set -u
OUT=${1:-throughput-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cores: $(nproc)" | tee -a "$OUT/gpu.txt"
"$PY" benchmarks/throughput/bench.py "$OUT" 2>&1 | tee "$OUT/bench.log"
exit "${PIPESTATUS[0]}"
