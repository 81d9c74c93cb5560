#!/usr/bin/env bash
# Issue #18's GPU benchmark, one command (one device call, under 10 minutes by default):
#   bash benchmarks/serve_gpu.sh OUTDIR
# Runs from source (PYTHONPATH=src). Extra wheels it needs beyond torch/triton/numpy/ninja: aiohttp
# (the server) and httpx (the client); without network, install them from wheels you bring:
#   pip install aiohttp httpx      (aiohttp pulls aiohappyeyeballs, aiosignal, attrs, frozenlist,
#                                   multidict, propcache, yarl; httpx pulls anyio, certifi, httpcore, h11,
#                                   idna, sniffio) - plus click, pluggy, rich for the kforge CLI
# Prints the figures last (also OUTDIR/serve_gpu.json): kforge run's and kforge serve's candidates per
# minute on this GPU, their ratio (target >= 0.9), p50/p95 latency per candidate, the server's ms/request.
# Settings by environment: CLIENTS (8), RUN_LIMIT_S (240), SERVE_LIMIT_S (240), and those of
# benchmarks/throughput/bench.py (MAX_SAMPLES, MAX_TIMING_S, SHAPES, COMPILE_WORKERS, CUDA_N ...).
set -u
OUT=${1:-serve-gpu-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cores: $(nproc)" | tee -a "$OUT/gpu.txt"
"$PY" -c "import aiohttp, httpx" || { echo "install aiohttp and httpx first (see the header of this script)"; exit 2; }
"$PY" benchmarks/serve_gpu.py "$OUT" 2>&1 | tee "$OUT/serve_gpu.log"
exit "${PIPESTATUS[0]}"
