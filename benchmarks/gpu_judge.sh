#!/usr/bin/env bash
# The judge on a GPU, one device call: the gpu-marked tests, the quickstart at main shapes, every
# built-in example solution judged twice (run-to-run spread, A/A ratios) and once against
# torch.compile. Run from the repository root: bash benchmarks/gpu_judge.sh OUT_DIR
set -u
OUT=${1:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 COLUMNS=140
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 60 python3 -m pytest tests/test_judge.py -m gpu -q -p no:cacheprovider 2>&1 | tail -3
SIX='problems.ids=["relu","softmax","layernorm","matmul","rowsum","matmul_bias_gelu"]'
RUNS=${RUNS:-2}
for i in $(seq 1 "$RUNS"); do
  timeout 120 python3 -m kforge run benchmarks/solutions.toml --json --set "run.out=$OUT/runs" --set "$SIX" \
    > "$OUT/solutions-$i.jsonl" 2> "$OUT/solutions-$i.err"
  echo "solutions run $i exit=$?"
done
[ "${COMPILE:-1}" = 1 ] && timeout 150 python3 -m kforge run benchmarks/solutions.toml --json --set "run.out=$OUT/runs" \
  --set 'problems.ids=["relu","softmax","layernorm"]' --set 'eval.baseline_compile=["default"]' \
  > "$OUT/solutions-compile.jsonl" 2> "$OUT/solutions-compile.err"
echo "compile run exit=$?"
timeout 110 python3 -m kforge run recipes/quickstart.toml --set "run.out=$OUT/runs" 2> "$OUT/quickstart.txt"
echo "quickstart exit=$?"
grep -v "^relu c\|^softmax c\|^layernorm c" "$OUT/quickstart.txt" | tail -12
python3 benchmarks/summarise_gpu_judge.py "$OUT"
