"""KernelBench interoperability: checking a benchmark's problems, KernelBench's baseline JSON, its fast_p.

- :func:`run_check` judges each problem with the problem's own reference as the candidate, through
  the local executor (the path ``kforge eval`` and ``kforge run`` take), and turns each result into a
  record (:func:`check_record`): judgeable or not and why (:func:`classify`), the judge's memory plan
  and peak, the eager (and torch.compile) time. ``kforge problems check`` is its command line.
- Baselines in KernelBench's ``results/timing`` format, ``{"level1": {"19_ReLU.py": {mean, std, min,
  max, num_trials, hardware, device}}}``: written from check records (:func:`baseline_from_records`)
  and read back (:func:`load_baseline`) to give a run's speedups against a published baseline
  (:func:`published_speedups`, ``kforge report RUN_DIR --baseline FILE``).
- :func:`kernelbench_fast_p`: fast_p computed the way KernelBench's ``scripts/benchmark_eval_analysis.py``
  does (problems aligned on the baseline, missing results counted as failures, ``baseline mean /
  runtime > p``).

Headless: imports no torch, textual or modal.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kforge.options import RecipeError

# Why a problem is not judgeable, classified from its EvalResult; "ok" when it is.
REASONS = {
    "ok": "judged correct against itself",
    "out_of_memory": "GPU (or host) memory ran out",
    "nondeterministic": "the reference disagrees with itself on the same inputs",
    "nonfinite": "the reference gives NaN/Inf on an input distribution",
    "inputs": "the judge cannot draw the problem's inputs",
    "timeout": "a step ran past its time limit",
    "timing": "the judge's timing guards rejected the reference itself (a noisy machine, or a judge bug)",
    "model_download": "the problem downloads a model (e.g. transformers from_pretrained)",
    "other": "another failure (see detail)",
}

_OOM = re.compile(r"OutOfMemoryError|out of memory|MemoryError|CUBLAS_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation",
                  re.I)
_DOWNLOAD = re.compile(r"from_pretrained|huggingface|hf_hub|HF_HUB_OFFLINE|snapshot_download|"
                       r"No module named '(transformers|huggingface_hub|datasets)'|torch\.hub|"
                       r"couldn't connect to|Max retries exceeded|Temporary failure in name resolution", re.I)
_NONFINITE = re.compile(r"NaN/Inf|NaN or Inf|non-?finite", re.I)
_INPUTS = re.compile(r"get_inputs|draw_inputs|cannot draw|the inputs? (could|can)n[o']t be drawn", re.I)


def reference_candidate(source: str, shape: dict[str, Any] | None = None) -> str:
    """The problem itself as a candidate: its source, the shape's constants (module globals that the
    reference's ``forward`` may read), and ``ModelNew`` standing for ``Model``."""
    lines = [source.rstrip(), "", "", "# kforge problems check: the reference judged against itself"]
    for key, value in (shape or {}).items():
        lines.append(f"{key} = {value!r}")
    lines.append("ModelNew = Model")
    return "\n".join(lines) + "\n"


def classify(result: dict[str, Any]) -> tuple[str, str]:
    """``(reason, detail)`` for a check's EvalResult (as a dict): ``"ok"`` when the reference was judged
    correct against itself, else one of :data:`REASONS`, with the judge's own words as the detail."""
    status = result.get("status")
    guard = str(result.get("guard") or "")
    error = str(result.get("error") or "")
    detail = (f"[{guard}] " if guard else "") + error
    if status == "correct":
        return "ok", ""
    if "download" in guard or _DOWNLOAD.search(error):
        return "model_download", detail
    if "memory" in guard or "oom" in guard.lower() or _OOM.search(error):
        return "out_of_memory", detail
    if status == "timeout" or guard == "timeout":
        return "timeout", detail
    if guard in ("timer", "timed_output", "roofline"):
        return "timing", detail
    if guard.endswith("nonfinite") or _NONFINITE.search(error):
        return "nonfinite", detail
    if guard in ("inputs", "draw_inputs") or _INPUTS.search(error):
        return "inputs", detail
    # the reference against itself: any disagreement on the same inputs is the reference's own nondeterminism
    if status == "incorrect" and (guard.endswith(("nondeterministic", "tolerance", "relative_error"))):
        return "nondeterministic", detail
    return "other", detail or f"status {status}"


def memory_of(diagnostics: dict[str, Any]) -> dict[str, Any]:
    """The memory figures of a result: the judge's ``diagnostics["memory"]`` when it has one, else the
    older ``judge_peak_gib``/``sandbox_peak_gib`` keys. ``peak_gib`` is judge plus sandbox (two processes
    on one GPU); ``peak_over_working_set`` is computed when the judge did not give it."""
    raw = diagnostics.get("memory")
    mem: dict[str, Any] = raw if isinstance(raw, dict) else {}
    judge = mem.get("judge_peak_gib", diagnostics.get("judge_peak_gib"))
    sandbox = mem.get("sandbox_peak_gib", diagnostics.get("sandbox_peak_gib"))
    working = mem.get("working_set_gib")
    peak = None if judge is None and sandbox is None else round((judge or 0.0) + (sandbox or 0.0), 3)
    ratio = mem.get("peak_over_working_set")
    if ratio is None and peak is not None and working:
        ratio = round(peak / working, 2)
    return {"working_set_gib": working, "judge_peak_gib": judge, "sandbox_peak_gib": sandbox, "peak_gib": peak,
            "peak_over_working_set": ratio, "plan": mem.get("plan")}


def _timing(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stats:
        return None
    return {k: stats.get(k) for k in ("median_ms", "mean_ms", "p20_ms", "p80_ms", "cv", "n", "samples_ms")}


def check_record(problem: Any, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One problem's line of a check: what ``--json`` prints and ``--out`` appends."""
    reason, detail = classify(result)
    eager = result.get("baseline_eager") or {}
    compiled = result.get("baseline_compile") or {}
    return {
        "problem_id": problem.id, "name": problem.name, "level": problem.level, "file": Path(problem.path).name,
        "hash": problem.hash, "judgeable": reason == "ok", "reason": reason, "detail": detail[:2000],
        "status": result.get("status"), "guard": result.get("guard"), "device": result.get("device"),
        "device_kind": result.get("device_kind"), "shape": result.get("shape_name"),
        **memory_of(result.get("diagnostics") or {}),
        "eager_ms": eager.get("median_ms"), "compile_ms": {m: s.get("median_ms") for m, s in compiled.items() if s},
        "eager": _timing(eager), "compile": {m: _timing(s) for m, s in compiled.items() if s},
        "timing_method": result.get("timing_method"), "versions": result.get("versions") or {},
        "flags": result.get("flags") or [], "seconds": round(seconds, 2),
    }


def skipped_record(problem: Any, reason: str, detail: str) -> dict[str, Any]:
    """A problem the check did not send to the judge (a model download, known before any GPU work)."""
    return {"problem_id": problem.id, "name": problem.name, "level": problem.level, "file": Path(problem.path).name,
            "hash": problem.hash, "judgeable": False, "reason": reason, "detail": detail, "status": None,
            "guard": "static", **memory_of({}), "eager_ms": None, "compile_ms": {}, "eager": None, "compile": {},
            "seconds": 0.0}


def summarise_check(records: Iterable[dict[str, Any]], selected: int | None = None) -> dict[str, Any]:
    """The summary line of a check: counts by reason, the peaks and the ratio of peak to working set.
    ``problems`` is the selection's size (``selected``), ``checked`` how many have a record."""
    recs = list(records)
    reasons: dict[str, int] = {}
    for r in recs:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    ratios = [r["peak_over_working_set"] for r in recs if r.get("peak_over_working_set") is not None]
    peaks = [r["peak_gib"] for r in recs if r.get("peak_gib") is not None]
    return {"summary": True, "problems": len(recs) if selected is None else selected, "checked": len(recs),
            "judgeable": sum(1 for r in recs if r["judgeable"]),
            "reasons": reasons, "not_judgeable": [r["problem_id"] for r in recs if not r["judgeable"]],
            "max_peak_gib": max(peaks) if peaks else None,
            "median_peak_over_working_set": statistics.median(ratios) if ratios else None,
            "max_peak_over_working_set": max(ratios) if ratios else None,
            "devices": sorted({r["device"] for r in recs if r.get("device")})}


# -- resumable JSONL ----------------------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    """The problem records of a check's JSONL file (a torn last line, from a killed run, is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "problem_id" in rec and "reason" in rec:
            out.append(rec)
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:  # one write per line: a killed run leaves whole lines and at most one torn one
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()


# -- running a check ----------------------------------------------------------------------------------
async def run_check(problems: list[Any], ev: dict[str, Any], executor: Any, shape: str,
                    on_record: Callable[[dict[str, Any]], None], budget_s: float | None = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """Judge each problem against itself on a started ``executor`` (as many at once as it has judges),
    calling ``on_record`` as each finishes. Returns the records, and the ids left unstarted because
    ``budget_s`` ran out (the judgings already started finish)."""
    from kforge.api import code_hash
    from kforge.engine import build_request
    from kforge.plugins import get_registry

    backend = get_registry().get("backends", "triton")()  # a plain Python module: the reference's torch code
    kind = executor.device_info.get("device_kind")
    shape_name = ("main" if kind == "cuda" else "small") if shape == "auto" else shape
    started = time.monotonic()
    slots = asyncio.Semaphore(max(len(getattr(executor, "workers", ()) or ()), 1))
    records: list[dict[str, Any]] = []
    unstarted: list[str] = []

    async def one(problem: Any) -> None:
        async with slots:
            if budget_s is not None and time.monotonic() - started > budget_s:
                unstarted.append(problem.id)
                return
            code = reference_candidate(problem.source, problem.shape(shape_name))
            req = build_request(problem, code, code_hash(code), backend, shape_name, ev, 0)
            t0 = time.monotonic()
            try:
                res = (await executor.evaluate(req)).to_dict()
            except Exception as exc:  # noqa: BLE001 - one problem's failure is its record, not the check's end
                res = {"status": "infra_error", "error": f"{type(exc).__name__}: {exc}"}
            rec = check_record(problem, res, time.monotonic() - t0)
            records.append(rec)
            on_record(rec)

    await asyncio.gather(*(one(p) for p in problems))
    return records, unstarted


# -- KernelBench's baseline JSON ----------------------------------------------------------------------
def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


def kb_stats(samples_ms: list[float], hardware: str | None, device: str | None) -> dict[str, Any]:
    """KernelBench's ``get_timing_stats``: mean, population std, min, max (3 significant figures), trials."""
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in samples_ms) / n)
    return {"mean": _sig3(mean), "std": _sig3(std), "min": _sig3(min(samples_ms)), "max": _sig3(max(samples_ms)),
            "num_trials": n, "hardware": hardware, "device": device}


def baseline_key(level: int | None, file: str) -> tuple[str, str]:
    return f"level{level}", file if file.endswith(".py") else f"{file}.py"


def baseline_from_records(records: Iterable[dict[str, Any]], which: str = "eager") -> dict[str, dict[str, Any]]:
    """A KernelBench baseline from check records: ``which`` is ``"eager"`` or a torch.compile mode
    (``"default"``, ...). Only judgeable problems with a level and timing samples are written."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        stats = r.get("eager") if which == "eager" else (r.get("compile") or {}).get(which)
        if not r.get("judgeable") or r.get("level") is None or not stats or not stats.get("samples_ms"):
            continue
        level, file = baseline_key(r["level"], r["file"])
        device = "cuda:0" if r.get("device_kind") == "cuda" else r.get("device_kind") or None
        out.setdefault(level, {})[file] = kb_stats([float(x) for x in stats["samples_ms"]], r.get("device"), device)
    return {k: dict(sorted(v.items(), key=lambda kv: _file_order(kv[0]))) for k, v in sorted(out.items())}


def _file_order(name: str) -> tuple[int, str]:
    m = re.match(r"(\d+)_", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def write_baseline(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_baseline(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a KernelBench baseline JSON (``{"levelN": {"file.py": {"mean": ms, ...}}}``); a clear
    RecipeError when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise RecipeError(f"cannot read baseline {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise RecipeError(f"baseline {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"baseline {path} is not a KernelBench baseline: expected {{\"level1\": {{\"1_X.py\": "
                          "{\"mean\": ms, ...}}}}")
    for level, entries in data.items():
        if not re.fullmatch(r"level\d+", str(level)) or not isinstance(entries, dict):
            raise RecipeError(f"baseline {path}: key {level!r} is not a level (expected 'level1', 'level2', ...) "
                              "mapping file names to timings")
        for file, stats in entries.items():
            if not isinstance(stats, dict) or not isinstance(stats.get("mean"), (int, float)) or stats["mean"] <= 0:
                raise RecipeError(f"baseline {path}: {level}/{file} has no positive 'mean' (ms)")
    return data


# -- fast_p, KernelBench's way ------------------------------------------------------------------------
def kernelbench_fast_p(results: dict[str, dict[str, Any]], baseline_level: dict[str, dict[str, Any]],
                       problem_files: list[str], p: float) -> float:
    """fast_p as KernelBench's ``benchmark_eval_analysis.py`` computes it for one level.

    ``problem_files``: the level's problem files (its dataset); ``results``: file -> ``{"correctness":
    bool, "runtime": ms}`` (its sample 0). A problem without a result counts as incorrect; one that the
    baseline lacks is left out of the count (KernelBench skips it with a warning). fast_p is the number
    of correct problems with ``baseline mean / runtime > p``, over the problems counted."""
    n = hits = 0
    for file in sorted(problem_files, key=_file_order):
        if file not in baseline_level:
            continue
        n += 1
        r = results.get(file) or {"correctness": False, "runtime": -1.0}
        if r.get("correctness") and baseline_level[file]["mean"] / float(r["runtime"]) > p:
            hits += 1
    return hits / n if n > 0 else 0.0


def published_speedups(run_dir: Path, baseline_path: Path, p_values: Iterable[float] | None = None
                       ) -> dict[str, Any]:
    """A run's speedups against a published KernelBench baseline, per problem, beside its live ones.

    Each problem's fastest correct candidate (by mean time, the statistic KernelBench's baseline and
    runtime use) is set against the baseline's mean for the same level and file; fast_p is
    :func:`kernelbench_fast_p` per level, and over all levels (hits and counts summed)."""
    from kforge.metrics import FAST_P
    from kforge.store import RunReader

    baseline = load_baseline(baseline_path)
    with RunReader(run_dir) as store:
        problems = store.problems()
        results = store.results()
    fastest: dict[str, dict[str, Any]] = {}
    for r in results:
        t = (r.get("timing") or {}).get("mean_ms")
        if r.get("status") == "correct" and t and (r["problem_id"] not in fastest
                                                   or t < fastest[r["problem_id"]]["mean_ms"]):
            fastest[r["problem_id"]] = {"mean_ms": t, "live_speedup": r.get("speedup_vs_eager")}
    rows = []
    by_level: dict[str, dict[str, Any]] = {}
    for p in problems:
        level, file = baseline_key(p["level"], Path(p["summary"].get("path") or p["id"]).name)
        entry = baseline.get(level, {}).get(file)
        best = fastest.get(p["id"])
        speedup = entry["mean"] / best["mean_ms"] if entry and best else None
        rows.append({"problem_id": p["id"], "level": level, "file": file, "baseline_ms": entry["mean"] if entry else None,
                     "candidate_mean_ms": best["mean_ms"] if best else None,
                     "live_speedup": best["live_speedup"] if best else None, "published_speedup": speedup})
        lv = by_level.setdefault(level, {"results": {}, "files": []})
        lv["files"].append(file)
        if best:
            lv["results"][file] = {"correctness": True, "runtime": best["mean_ms"]}
    ps = tuple(p_values) if p_values is not None else FAST_P
    fast: dict[str, dict[str, float]] = {}
    for level, lv in sorted(by_level.items()):
        fast[level] = {f"{p:g}": kernelbench_fast_p(lv["results"], baseline.get(level, {}), lv["files"], p) for p in ps}
    counted = {lv: sum(1 for f in d["files"] if f in baseline.get(lv, {})) for lv, d in by_level.items()}
    total = sum(counted.values())
    overall = {f"{p:g}": (sum(fast[lv][f"{p:g}"] * counted[lv] for lv in fast) / total if total else 0.0) for p in ps}
    hardware = sorted({str(s.get("hardware")) for entries in baseline.values() for s in entries.values()
                       if s.get("hardware")})
    return {"baseline": str(baseline_path), "hardware": hardware, "problems": rows, "aligned": total,
            "fast_p": overall, "fast_p_by_level": fast}

