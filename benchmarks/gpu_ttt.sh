#!/usr/bin/env bash
# Test-time training end to end on a GPU, in one call (issue #8): a tiny causal LM built from
# scratch and warm-started on ReLU kernels, then `kforge run recipes/ttt_gpu.toml` (hf generator,
# ttt search, local executor judging every kernel on the GPU), killed with SIGKILL in its third step,
# and `kforge resume` to the end. Prints the per-step figures from the store last.
#   bash benchmarks/gpu_ttt.sh OUT_DIR [REPORT_DIR]
# OUT_DIR gets everything (the model, the run directory, logs). REPORT_DIR, if given, gets at most 8
# small files as they are made: log.txt (this script's whole output), card.txt, build.txt,
# report.txt, report.json, probe.txt and run.tar.gz (the runs' outputs, the store, the judge log).
# Run from the repository root. kforge runs from source (PYTHONPATH=src); the kforge-hf plugin is not
# installed either: its source goes on PYTHONPATH and a hand-written dist-info under OUT_DIR/site
# declares its entry point, which is how kforge finds plugins (src/kforge/plugins.py).
# Needs torch, triton, transformers, peft (and tokenizers, which transformers brings); no network.
# Everything stops by BUDGET_S seconds (default 540) so that the figures print inside a 10-minute call.
# Knobs (environment): TTT_STEPS (4), TTT_GROUPS (2), TTT_ROLLOUTS (8), TTT_KILL_STEP (2), BUDGET_S,
# BUILD_ARGS ("--seconds 45 --max-steps 800"), REUSE_MODEL (1: keep OUT_DIR/model if it is there),
# PY (python3), EXTRA_SET (more --set arguments for the run, space separated).
# On a machine without a GPU the same script runs on the CPU (Triton's interpreter, small shapes).
set -u
OUT=${1:-gpu-ttt-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=${2:-}
if [ -n "$REPORT" ]; then
  mkdir -p "$REPORT"
  REPORT=$(cd "$REPORT" && pwd)
  exec > >(tee -a "$REPORT/log.txt") 2>&1
fi
publish() {  # copy what exists so far to REPORT_DIR (8 files at most)
  [ -n "$REPORT" ] || return 0
  for f in card.txt build.txt report.txt report.json probe.txt; do
    [ -f "$OUT/$f" ] && cp "$OUT/$f" "$REPORT/$f"
  done
  (cd "$OUT" && tar czf "$REPORT/run.tar.gz" --ignore-failed-read plan.txt run1.txt resume.txt report-killed.txt \
     model/kforge_tiny.json run/kforge.db run/kforge.db-wal run/recipe.json run/provenance.json \
     run/ttt/metrics.jsonl run/logs run/events.jsonl 2>/dev/null)
  return 0
}
PY=${PY:-python3}
STEPS=${TTT_STEPS:-4}
NGROUPS=${TTT_GROUPS:-2}   # (not GROUPS: bash keeps the user's group ids in that name)
ROLLOUTS=${TTT_ROLLOUTS:-8}
KILL_STEP=${TTT_KILL_STEP:-2}
BUILD_ARGS=${BUILD_ARGS:---seconds 45 --max-steps 800}
EXTRA_SET=${EXTRA_SET:-}
T0=$(date +%s)
DEADLINE=$(( T0 + ${BUDGET_S:-540} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
stamp() { echo "[gpu_ttt +$(( $(date +%s) - T0 )) s] $*"; }

# the plugin without installing it: its source on the path, and a dist-info that declares the entry point
SITE="$OUT/site"
mkdir -p "$SITE/kforge_hf-0.1.0.dist-info"
printf 'Metadata-Version: 2.1\nName: kforge-hf\nVersion: 0.1.0\n' > "$SITE/kforge_hf-0.1.0.dist-info/METADATA"
printf '[kforge]\nhf = kforge_hf\n' > "$SITE/kforge_hf-0.1.0.dist-info/entry_points.txt"
export PYTHONPATH="$PWD/src:$PWD/plugins/kforge-hf/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 COLUMNS=160 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null \
  || echo "no nvidia-smi: CPU") | tee "$OUT/card.txt"
$PY -c "import sys, torch, triton, transformers, peft, tokenizers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'tokenizers', tokenizers.__version__)" \
  2>&1 | tail -1 | tee -a "$OUT/card.txt"
$PY -m kforge plugins > "$OUT/plugins.txt" 2>&1
grep -a -E "^ *(kforge-hf|generator: hf|search: ttt)" "$OUT/plugins.txt" | cut -c1-100
if ! grep -a -q "search: ttt" "$OUT/plugins.txt"; then
  echo "kforge does not see the kforge-hf plugin (ttt search); kforge plugins says:"; head -30 "$OUT/plugins.txt"
  exit 2
fi

if [ "${REUSE_MODEL:-0}" = 1 ] && [ -f "$OUT/model/kforge_tiny.json" ]; then
  stamp "reusing the model in $OUT/model"
else
  stamp "build the tiny model"
  rm -rf "$OUT/model"
  timeout -k 10 180 $PY benchmarks/gpu_ttt.py build "$OUT/model" $BUILD_ARGS 2>&1 \
    | grep -a --line-buffered -v -E "Warning|warnings.warn|it/s\]$" | tee "$OUT/build.txt"
fi
publish
[ -f "$OUT/model/kforge_tiny.json" ] || { echo "the model was not built"; exit 1; }
MAXTOK=$($PY -c "import json; print(json.load(open('$OUT/model/kforge_tiny.json'))['longest_answer'] + 48)")

RUN="$OUT/run"
rm -rf "$RUN"
SETS=(--set "generator.model_path=$OUT/model" --set "generator.max_new_tokens=$MAXTOK" --set "search.steps=$STEPS"
      --set "search.groups=$NGROUPS" --set "search.rollouts=$ROLLOUTS")
for s in $EXTRA_SET; do SETS+=(--set "$s"); done
$PY -m kforge run recipes/ttt_gpu.toml "${SETS[@]}" --run-dir "$RUN" --dry-run > "$OUT/plan.txt" 2>&1 \
  || { echo "the recipe does not validate:"; cat "$OUT/plan.txt"; exit 2; }
stamp "kforge run, to be killed in step $KILL_STEP ($(left) s left)"
# its own session and process group, so SIGKILL takes the judge and the sandboxes with it, as a crash would
SETSID=$(command -v setsid || true)
$SETSID $PY -m kforge run recipes/ttt_gpu.toml "${SETS[@]}" --run-dir "$RUN" > "$OUT/run1.txt" 2>&1 &
PID=$!
WAIT_S=$(( $(left) - 150 )); [ "$WAIT_S" -lt 30 ] && WAIT_S=30
$PY benchmarks/gpu_ttt.py wait "$RUN" --step "$KILL_STEP" --pid "$PID" --timeout "$WAIT_S" --grace 60
WAITED=$?   # 0: in the step; 3: the run ended first; 4: timed out (killed anyway, resumed with the time left)
if [ "$WAITED" = 0 ] || [ "$WAITED" = 4 ]; then
  PGID=$(ps -o pgid= -p "$PID" 2>/dev/null | tr -d ' ')
  if [ -n "$PGID" ] && [ "$PGID" = "$PID" ]; then kill -KILL -- "-$PGID" 2>/dev/null; else kill -KILL "$PID" 2>/dev/null; fi
  stamp "killed the run (SIGKILL)"
fi
wait "$PID" 2>/dev/null
echo "kforge run exit=$? (137: killed)"
grep -a -v -E "Warning|warnings.warn|it/s\]$" "$OUT/run1.txt" | tail -n 12 | cut -c1-160
sleep 1
$PY benchmarks/gpu_ttt.py report "$RUN" > "$OUT/report-killed.txt" 2>&1
sed -n '/^per-step figures/,/^search state/p' "$OUT/report-killed.txt"
publish

if $PY benchmarks/gpu_ttt.py finished "$RUN"; then
  # the run ended before it could be killed: resume it for one more step instead
  stamp "the run finished before the kill; resuming it for one more step"
  $PY - "$RUN/recipe.json" <<'PY'
import json, sys
p = sys.argv[1]; t = json.load(open(p)); t["search"]["steps"] += 1; json.dump(t, open(p, "w"), indent=2)
PY
elif [ "$WAITED" = 3 ]; then
  echo "the run stopped before step $KILL_STEP on its own: see $OUT/run1.txt and the judge log"
  tail -n 20 "$RUN/logs/judge-0.log" 2>/dev/null
fi
RESUME_S=$(( $(left) - 40 )); [ "$RESUME_S" -lt 30 ] && RESUME_S=30
stamp "kforge resume (stopped with SIGINT after $RESUME_S s if not done)"
timeout -s INT -k 20 "$RESUME_S" $PY -m kforge resume "$RUN" > "$OUT/resume.txt" 2>&1
echo "kforge resume exit=$? (124/130: stopped at the deadline)"
grep -a -v -E "Warning|warnings.warn|it/s\]$" "$OUT/resume.txt" | tail -n 16 | cut -c1-160
stamp "probe the adapters"
timeout -k 5 30 $PY benchmarks/gpu_ttt.py probe "$RUN" 2>&1 | grep -a -v -E "Warning|warnings.warn|it/s\]$" \
  | tee "$OUT/probe.txt"
stamp "done"
$PY benchmarks/gpu_ttt.py report "$RUN" --json "$OUT/report.json" | tee "$OUT/report.txt"
publish
# let tee finish writing REPORT_DIR/log.txt before the call returns
if [ -n "$REPORT" ]; then exec 1>&- 2>&-; sleep 1; fi
