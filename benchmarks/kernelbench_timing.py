"""Eager time of KernelBench problems by three timers on the same card in one call: kforge's judge,
``triton.testing.do_bench`` and KernelBench's own ``cuda_event`` timer.

    PYTHONPATH=src python3 benchmarks/kernelbench_timing.py KB_CHECKOUT OUTDIR [--level 1] [--problems 1,19,23]
        [--limit N] [--max-timing-s 2] [--budget-s 480]

KB_CHECKOUT is a KernelBench checkout (the folder holding ``src/kernelbench`` and ``KernelBench/level1``...).
Its timer, ``time_execution_with_cuda_event``, is loaded from there at run time (the checkout's
``src/kernelbench/timing.py``, by path); nothing of it is copied here. Problems are its files, unchanged.

1. **kforge**: each problem judged against itself (``kforge.kernelbench.run_check``, the path of
   ``kforge problems check``), on the local executor: the eager baseline's median (ms).
2. **do_bench**: the problem's ``Model`` on the GPU, in this process, timed by
   ``triton.testing.do_bench(fn, return_mode="median")`` (its own L2 clearing, 25 ms warm-up, 100 ms of repetitions).
3. **cuda_event**: the same model and inputs timed by KernelBench's ``time_execution_with_cuda_event``
   (3 warm-ups, 100 trials after one discarded, an L2 flush before each); its median and mean (KernelBench's
   baseline JSON reports the mean).

The judge runs first, for every problem, and is shut down before this process touches CUDA, so the three never
share the GPU. PyTorch's default math modes everywhere (recorded in the JSON). Printed last: per problem the
three times and kforge / do_bench, cuda_event / do_bench; then the median of each ratio, and how many problems
are within 2% and 5%. Written to OUTDIR/kernelbench_timing.json.

Without CUDA, the judge's part runs on the CPU (use a tiny fixture) and the GPU timers are skipped, saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def select(problems: list[Any], level: int, wanted: str | None, limit: int | None) -> list[Any]:
    problems = [p for p in problems if p.level == level]
    if wanted:
        keys = {w.strip() for w in wanted.split(",") if w.strip()}
        problems = [p for p in problems if Path(p.path).stem in keys or Path(p.path).stem.split("_")[0] in keys]
    problems.sort(key=lambda p: int(Path(p.path).stem.split("_")[0]) if Path(p.path).stem[0].isdigit() else 0)
    return problems[:limit] if limit else problems


def judge_times(problems: list[Any], max_timing_s: float, budget_s: float | None) -> dict[str, dict[str, Any]]:
    from kforge import kernelbench as kb
    from kforge.executors.local import LocalExecutor
    from kforge.recipe import CORE_OPTIONS

    ev = CORE_OPTIONS["eval"].resolve({"max_timing_s": max_timing_s}, "eval", skip=())
    ev["ops_check"] = ev["profile_check"] = False
    executor = LocalExecutor(device="auto", gpus=None, workers=None, judges_per_gpu=1)

    def progress(rec: dict[str, Any]) -> None:
        log(f"kforge judge: {rec['problem_id']}: {rec['reason']}, eager {rec['eager_ms']} ms")

    async def go() -> list[dict[str, Any]]:
        await executor.start()
        try:
            records, unstarted = await kb.run_check(problems, ev, executor, "main", progress, budget_s)
            if unstarted:
                log(f"budget: {len(unstarted)} problems left out of the judge's part")
            return records
        finally:
            await executor.shutdown()

    return {r["problem_id"]: r for r in asyncio.run(go())}


def kernelbench_timer(kb_src: Path) -> Any:
    """KernelBench's ``time_execution_with_cuda_event``, from the checkout's ``kernelbench/timing.py`` loaded
    as a module of its own: the package's ``__init__`` imports its LLM clients (openai, litellm, dotenv),
    which a GPU box need not have; ``timing.py`` itself needs only torch and numpy."""
    import importlib.util

    path = kb_src / "kernelbench" / "timing.py"
    spec = importlib.util.spec_from_file_location("kernelbench_timing_checkout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.time_execution_with_cuda_event


def gpu_times(problems: list[Any], kb_src: Path) -> dict[str, dict[str, Any]]:
    import torch
    import triton.testing

    from kforge.runtime.problem import load_problem_module

    time_execution_with_cuda_event = kernelbench_timer(kb_src)

    dev = torch.device("cuda:0")
    out: dict[str, dict[str, Any]] = {}
    for p in problems:
        row: dict[str, Any] = {}
        try:
            module = load_problem_module(p.source, p.id, {})
            torch.manual_seed(42)
            model = module.Model(*module.get_init_inputs()).to(dev).eval()
            torch.manual_seed(42)
            inputs = [x.to(dev) if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
            with torch.no_grad():
                row["do_bench_ms"] = float(triton.testing.do_bench(functools.partial(model, *inputs),
                                                                   return_mode="median"))
                with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
                    samples = time_execution_with_cuda_event(model, inputs, num_warmup=3, num_trials=100,
                                                             discard_first=1, verbose=False, device=dev)
            row["cuda_event_median_ms"] = statistics.median(samples)
            row["cuda_event_mean_ms"] = statistics.fmean(samples)
            row["cuda_event_n"] = len(samples)
        except Exception as exc:  # noqa: BLE001 - one problem's failure is its row
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            model = inputs = None  # noqa: F841 - free before the next problem
            gc.collect()
            torch.cuda.empty_cache()
        log(f"GPU timers: {p.id}: {row}")
        out[p.id] = row
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kb_checkout", type=Path)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--problems", default=None, help="problem numbers or file stems, separated by commas")
    ap.add_argument("--limit", type=int, default=None, help="the first N problems of the level (by number)")
    ap.add_argument("--max-timing-s", type=float, default=2.0, help="the judge's eval.max_timing_s")
    ap.add_argument("--budget-s", type=float, default=None, help="start no new judging after this many seconds")
    args = ap.parse_args()

    from kforge.problems import load_problem_path

    problem_dir = args.kb_checkout / "KernelBench"
    kb_src = args.kb_checkout / "src"
    if not problem_dir.is_dir():
        print(f"Error: {problem_dir} is not a folder: give a KernelBench checkout", file=sys.stderr)
        return 2
    problems = select(load_problem_path(problem_dir), args.level, args.problems, args.limit)
    if not problems:
        print(f"Error: no level-{args.level} problems selected in {problem_dir}", file=sys.stderr)
        return 2
    args.outdir.mkdir(parents=True, exist_ok=True)
    log(f"{len(problems)} problems of level {args.level}")
    judged = judge_times(problems, args.max_timing_s, args.budget_s)

    import torch

    cuda = torch.cuda.is_available()
    if cuda and not (kb_src / "kernelbench" / "timing.py").is_file():
        print(f"Error: {kb_src}/kernelbench/timing.py not found: KernelBench's timer comes from the checkout",
              file=sys.stderr)
        return 2
    if not cuda:
        log("no CUDA here: do_bench and KernelBench's cuda_event timer are GPU timers, skipped "
            "(the judge's part ran on the CPU)")
    timers = gpu_times([p for p in problems if p.id in judged], kb_src) if cuda else {}

    rows = []
    for p in problems:
        rec = judged.get(p.id, {})
        t = timers.get(p.id, {})
        kf = rec.get("eager_ms")
        rows.append({"problem": p.id, "judge": rec.get("reason"), "kforge_ms": kf, "do_bench_ms": t.get("do_bench_ms"),
                     "cuda_event_median_ms": t.get("cuda_event_median_ms"),
                     "cuda_event_mean_ms": t.get("cuda_event_mean_ms"),
                     "kforge_over_do_bench": ratio(kf, t.get("do_bench_ms")),
                     "cuda_event_over_do_bench": ratio(t.get("cuda_event_median_ms"), t.get("do_bench_ms")),
                     "error": t.get("error")})
    summary: dict[str, Any] = {}
    for key in ("kforge_over_do_bench", "cuda_event_over_do_bench"):
        vals = [r[key] for r in rows if r[key] is not None]
        summary[key] = {"median": statistics.median(vals) if vals else None, "n": len(vals),
                        "within_2pct": sum(abs(v - 1) <= 0.02 for v in vals),
                        "within_5pct": sum(abs(v - 1) <= 0.05 for v in vals)}
    device = next((r.get("device") for r in judged.values() if r.get("device")), None)
    meta: dict[str, Any] = {"device": device, "torch": torch.__version__, "level": args.level,
                            "max_timing_s": args.max_timing_s, "kernelbench_checkout": str(args.kb_checkout)}
    if cuda:
        meta["math_modes"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                              "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                              "float32_matmul_precision": torch.get_float32_matmul_precision()}
    (args.outdir / "kernelbench_timing.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary},
                                                                    indent=2, default=str))

    def f(x: float | None, nd: int = 4) -> str:
        return "-" if x is None else f"{x:.{nd}f}"

    print(f"device: {device}; torch {torch.__version__}")
    print(f"{'problem':<48} {'judge':<16} {'kforge ms':>10} {'do_bench':>10} {'cuda_event':>10} "
          f"{'kf/db':>7} {'ce/db':>7}")
    for r in rows:
        print(f"{r['problem'][:48]:<48} {str(r['judge'])[:16]:<16} {f(r['kforge_ms']):>10} {f(r['do_bench_ms']):>10} "
              f"{f(r['cuda_event_median_ms']):>10} {f(r['kforge_over_do_bench'], 3):>7} "
              f"{f(r['cuda_event_over_do_bench'], 3):>7}" + (f"  {r['error']}" if r["error"] else ""))
    for key, s in summary.items():
        print(f"{key}: median {f(s['median'], 3)} over {s['n']} problems; within 2%: {s['within_2pct']}, "
              f"within 5%: {s['within_5pct']}")
    print(f"wrote {args.outdir / 'kernelbench_timing.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
