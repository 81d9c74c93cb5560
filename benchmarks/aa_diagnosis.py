"""Where the judge's A/A goes wrong for a short kernel (issue #9): raw A and A' samples, on a GPU.

    PYTHONPATH=src python benchmarks/aa_diagnosis.py OUTDIR        (about 1 minute on an H200)

The fidelity benchmark's ~20 us kernel (``x * 2.0`` over AA_N floats, default 3866624: ~12 us on an
H200) is judged against itself by ``kforge.runtime.judge.Judge`` (graph replay; AA_ROUNDS rounds,
default 100), with the judge's timer instrumented: per A and A' sample, the flush's device time, the
reading, the host's time from the flush's launch to the start event and the replay call's; and which
rounds had their output checked (the judge maps the sandbox's output then). Variants (AA_VARIANTS,
comma-separated, default all): ``current``; ``sync-after-flush`` (the judge's side only: a host
synchronisation between the flush and the start event, the order before 2026-12-03); ``no-spares``
(no spare sandboxes); ``no-flush`` (``eval.flush_l2 = false``). Printed per variant, as JSON lines, and
written to OUTDIR/aa.json: A/A, A and A' quantiles, and A' split by checked and unchecked rounds.

On an H200 (2026-12-03, commit b1adc9d, before the per-round check moved after A'; raw output in
benchmarks/results/2026-12-03-h200/aa-diagnosis.json, without the checked split, added after it):
A read 11.6/11.8/12.1 us (p10/50/90) in every variant with a flush, while A' had a slow tail (p90
23.4 us; 11% of its samples over twice the quickest), 44% of A' over twice the quickest without a flush,
the same with or without spare sandboxes.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))


def main() -> None:
    import fidelity as F
    import torch

    from kforge.runtime import protocol as P
    from kforge.runtime import timing as T
    from kforge.runtime.judge import Judge

    if not torch.cuda.is_available():
        sys.exit("aa_diagnosis.py needs a CUDA GPU (it times graph replays on one)")
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    outdir.mkdir(parents=True, exist_ok=True)
    n = int(os.environ.get("AA_N", "3866624"))
    rounds = int(os.environ.get("AA_ROUNDS", "100"))
    samples: list[tuple[float, float, float, float]] = []
    checked: set[int] = set()
    orig_events, orig_decode = T.Timer._events_around, Judge._decode

    def instrumented(order: str) -> Any:
        def events_around(self: Any, call: Any, sync_inside: bool) -> Any:
            if sync_inside:  # plain calls (warm-up): as they are
                return orig_events(self, call, sync_inside)
            torch.cuda.synchronize(self.device)
            e0, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            h0 = time.perf_counter()
            e0.record()
            if self.flush_buffer is not None:
                self.flush_buffer.zero_()
            if order == "sync":
                torch.cuda.synchronize(self.device)
            start.record()
            h1 = time.perf_counter()
            out = call()
            h2 = time.perf_counter()
            end.record()
            end.synchronize()
            torch.cuda.synchronize(self.device)
            ms = start.elapsed_time(end)
            samples.append((e0.elapsed_time(start), ms, (h1 - h0) * 1e6, (h2 - h1) * 1e6))
            return float(ms), out
        return events_around

    def decode(self: Any, sb: Any, obj: Any, cap: Any, what: str) -> Any:
        if what == "a timed output":
            checked.add(max(len(samples) - 1, 0) // 2)  # the round of the last A (or A') recorded
        return orig_decode(self, sb, obj, cap, what)

    def quantiles(xs: list[float]) -> list[float]:
        v = sorted(xs)
        return [round(v[int(p * (len(v) - 1))] * 1e3, 1) for p in (0.1, 0.5, 0.9)] if v else []

    def run(name: str, order: str = "behind", spares: int | None = None, flush: bool = True) -> dict[str, Any]:
        T.Timer._events_around = instrumented(order)
        Judge._decode = decode
        samples.clear()
        checked.clear()
        judge = Judge(device="cuda", keep_spare=spares != 0, spares=spares)
        try:
            req = P.EvalRequest(
                request_id=name, problem_id="aa", problem_source=F.source("elementwise", n, "Model"),
                candidate_source=F.source("elementwise", n, "ModelNew"), backend="triton", shape_name="main",
                shape={}, trials=3, warmup=5, min_samples=rounds, max_samples=rounds, max_timing_s=30,
                target_rel_se=0.0, profile_check=False, ops_check=False, compile_timeout_s=300,
                run_timeout_s=120, flush_l2=flush)
            res = judge.evaluate(req)
        finally:
            judge.close()
            T.Timer._events_around, Judge._decode = orig_events, orig_decode
        a, a2 = samples[0::2], samples[1::2]
        quick = min((x[1] for x in samples), default=0.0)
        row: dict[str, Any] = {"variant": name, "status": res.status, "aa": res.aa_ratio,
                               "cand_median_ms": (res.timing or {}).get("median_ms"), "rounds_checked": len(checked)}
        for label, xs in (("A", a), ("A2", a2)):
            row[label] = {"n": len(xs), "read_us_p10_50_90": quantiles([x[1] for x in xs]),
                          "flush_us_median": round(statistics.median(x[0] for x in xs) * 1e3, 1) if xs else None,
                          "host_flush_to_start_us_median": round(statistics.median(x[2] for x in xs), 1) if xs else None,
                          "host_replay_call_us_median": round(statistics.median(x[3] for x in xs), 1) if xs else None,
                          "share_over_2x_quickest": round(sum(x[1] > 2 * quick for x in xs) / len(xs), 3) if xs else None}
        row["A2_checked_rounds_us_p10_50_90"] = quantiles([x[1] for i, x in enumerate(a2) if i in checked])
        row["A2_unchecked_rounds_us_p10_50_90"] = quantiles([x[1] for i, x in enumerate(a2) if i not in checked])
        print(json.dumps(row), flush=True)
        return row

    variants = {"current": {}, "sync-after-flush": {"order": "sync"}, "no-spares": {"spares": 0},
                "no-flush": {"flush": False}}
    chosen = [v for v in os.environ.get("AA_VARIANTS", ",".join(variants)).split(",") if v]
    rows = []
    for name in chosen:
        try:
            rows.append(run(name, **variants[name]))
        except Exception as exc:  # noqa: BLE001 - one variant failing does not lose the others
            print(json.dumps({"variant": name, "failed": repr(exc)}), flush=True)
    (outdir / "aa.json").write_text(json.dumps(rows, indent=1))
    print(f"(aa.json written to {outdir})")


if __name__ == "__main__":
    main()
