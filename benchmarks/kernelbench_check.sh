#!/usr/bin/env bash
# `kforge problems check` over KernelBench levels 1-3 (250 problems), in chunks that each fit a 9-minute
# call on the GPU machine. Run the same command again until it prints "all N problems checked": each
# call judges for at most BUDGET_S seconds of new problems, appends every record to OUTDIR/check.jsonl as
# it finishes, and goes on from there next time (problems already in the file are not judged again).
#
#   benchmarks/kernelbench_check.sh KERNELBENCH_DIR OUTDIR
#
# KERNELBENCH_DIR is the problem folder of a KernelBench checkout (the one holding level1/ level2/
# level3/, e.g. .kb/KernelBench). Runs from the repository root with PYTHONPATH=src python3 -m kforge
# (neither textual nor modal is needed). Writes, in OUTDIR:
#   check.jsonl                 one record per problem (kforge.kernelbench.check_record)
#   table.txt                   the table of every problem checked so far
#   summary.json                the summary (judgeable count, reasons, peak / working set)
#   baseline_time_kforge.json   the eager times in KernelBench's results/timing format
# Environment:
#   BUDGET_S (420)          start no new problem after this many seconds of a call
#   MAX_TIMING_S (2)        eval.max_timing_s: timing cap per problem (the judge's default is 10)
#   LEVELS ("1 2 3")        the levels to check
#   COMPILE (0)             1: time torch.compile too and write baseline_time_kforge_compile.json
#   EXTRA ("")              more arguments for `kforge problems check` (e.g. --set executor.judges_per_gpu=1)
#   PYTHON (python3)
# Without CUDA it runs on the CPU (small problems only: a tiny fixture, for checking the script itself).
set -u -o pipefail

if [ $# -lt 2 ]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
SRC=$1
OUT=$2
BUDGET_S=${BUDGET_S:-420}
MAX_TIMING_S=${MAX_TIMING_S:-2}
LEVELS=${LEVELS:-"1 2 3"}
COMPILE=${COMPILE:-0}
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
if [ ! -d "$SRC" ]; then
    echo "Error: $SRC is not a folder (give a KernelBench checkout's problem folder, e.g. .kb/KernelBench)" >&2
    exit 2
fi

level_args=()
for l in $LEVELS; do level_args+=(--level "$l"); done
compile_args=()
[ "$COMPILE" = "1" ] && compile_args=(--compile-baseline-out "$OUT/baseline_time_kforge_compile.json")

cd "$ROOT"
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "kforge commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
start=$(date +%s)
# SIGINT at the hard limit: the check stops cleanly (its judges shut down), the records so far are kept
# shellcheck disable=SC2086
timeout -s INT $((BUDGET_S + 150)) "$PYTHON" -m kforge problems check "$SRC" "${level_args[@]}" \
    --out "$OUT/check.jsonl" --budget-s "$BUDGET_S" --set eval.max_timing_s="$MAX_TIMING_S" \
    --baseline-out "$OUT/baseline_time_kforge.json" "${compile_args[@]}" --json ${EXTRA:-} \
    > "$OUT/last-call.jsonl"
rc=$?
echo "this call: exit $rc after $(( $(date +%s) - start )) s" >&2
# the table and the summary of everything checked so far (nothing is judged again: all are in the file)
"$PYTHON" -m kforge problems check "$SRC" "${level_args[@]}" --out "$OUT/check.jsonl" --budget-s 0 \
    > "$OUT/table.txt" 2>/dev/null
"$PYTHON" -m kforge problems check "$SRC" "${level_args[@]}" --out "$OUT/check.jsonl" --budget-s 0 --json \
    2>/dev/null | tail -1 > "$OUT/summary.json"
cat "$OUT/table.txt"
"$PYTHON" - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
left = s["remaining"]
if left:
    print(f"{s['checked']} of {s['problems']} problems checked, {left} left: run this command again")
else:
    print(f"all {s['problems']} problems checked: {s['judgeable']} judgeable; reasons {s['reasons']}; "
          f"peak / working set: median {s['median_peak_over_working_set']}, max {s['max_peak_over_working_set']}")
EOF
