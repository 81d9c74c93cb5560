#!/usr/bin/env bash
# The walking skeleton on a GPU: the quickstart recipe at its main shapes, and every built-in
# example solution judged with `kforge eval`. Run from the repository root on a CUDA machine:
#   bash benchmarks/gpu_quickstart.sh OUT_DIR
# (kforge is run from source: PYTHONPATH=src). Prints the tables last.
set -u
OUT=${1:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

echo "== built-in example solutions (kforge eval, main shapes) =="
for f in src/kforge/problems/builtin/solutions/triton/*.py; do
  id=$(basename "$f" .py)
  /usr/bin/time -f "$id eval wall %e s" python3 -m kforge eval --problem "$id" "$f" --shape main --json \
    > "$OUT/eval-$id.json" 2>> "$OUT/eval-stderr.txt"
  echo "$id exit=$?"
done
tail -n 20 "$OUT/eval-stderr.txt"

echo "== quickstart, main shapes =="
/usr/bin/time -f "quickstart wall %e s" python3 -m kforge run recipes/quickstart.toml \
  --set "run.out=$OUT/runs" --set problems.shapes=main 2> "$OUT/quickstart-table.txt"
echo "quickstart exit=$?"
cat "$OUT/quickstart-table.txt"
python3 - "$OUT" <<'PY'
import json, sys, glob
rows = []
for f in sorted(glob.glob(f"{sys.argv[1]}/eval-*.json")):
    try:
        r = json.load(open(f))
    except Exception as e:
        print(f, "unreadable", e); continue
    t, b = r.get("timing") or {}, r.get("baseline_eager") or {}
    rows.append((r["problem_id"], r["status"], t.get("median_ms"), b.get("median_ms"), r.get("speedup"),
                 t.get("cv"), t.get("n"), r.get("roofline_fraction"), r.get("device")))
print(f"{'problem':<18}{'status':<10}{'kernel ms':>10}{'eager ms':>10}{'speedup':>9}{'cv':>8}{'n':>5}{'roofline':>9}  device")
for p, s, t, b, sp, cv, n, rf, d in rows:
    f = lambda x, k=".3f": "-" if x is None else format(x, k)
    print(f"{p:<18}{s:<10}{f(t):>10}{f(b):>10}{f(sp, '.2f'):>9}{f(cv, '.3f'):>8}{f(n, 'd'):>5}{f(rf, '.2f'):>9}  {d}")
PY
