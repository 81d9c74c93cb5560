"""Print the table of benchmarks/gpu_judge.sh's results (reads the --json event streams)."""

import glob
import json
import statistics
import sys

out = sys.argv[1]
runs: dict[str, list[dict]] = {}
for path in sorted(glob.glob(f"{out}/solutions-*.jsonl")):
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "result":
            runs.setdefault(path.rsplit("/", 1)[-1], []).append(e)

print(f"{'run':<24}{'problem':<18}{'status':<11}{'cand ms':>9}{'eager ms':>9}{'speedup':>8}{'vs compile':>11}"
      f"{'A/A':>8}{'cv':>7}{'n':>4}  flags / error")
for run, events in runs.items():
    for e in events:
        r = e.get("result") or {}
        f = lambda x, k=".3f": "-" if x is None else format(x, k)  # noqa: E731
        print(f"{run:<24}{e['problem']:<18}{e['status']:<11}{f(e.get('time_ms')):>9}{f(e.get('baseline_ms')):>9}"
              f"{f(e.get('speedup'), '.2f'):>8}{f(e.get('speedup_vs_compile'), '.2f'):>11}{f(e.get('aa_ratio'), '.4f'):>8}"
              f"{f(e.get('cv'), '.3f'):>7}{f(e.get('n'), 'd'):>4}  {','.join(e.get('flags') or [])} "
              f"{(e.get('error') or '')[:90]}")
a = {e["problem"]: e.get("time_ms") for e in runs.get("solutions-1.jsonl", [])}
b = {e["problem"]: e.get("time_ms") for e in runs.get("solutions-2.jsonl", [])}
diffs = [abs(a[p] / b[p] - 1) for p in a if a.get(p) and b.get(p)]
if diffs:
    print(f"run-to-run |t1/t2 - 1| over {len(diffs)} kernels: median {statistics.median(diffs):.4f}, max {max(diffs):.4f}")
