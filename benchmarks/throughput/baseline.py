"""The baseline harness of issue #9: candidates judged the way common evaluation scripts do it.

One fresh Python process per candidate, one after the other: the process imports torch, creates its
CUDA context, compiles the candidate (``load_inline`` / Triton JIT inside it, no cache shared with
kforge), judges it and exits. To compare like with like, the judging itself is kforge's: each process
runs the same static checks as ``kforge run``, then builds a ``kforge.runtime.judge.Judge(keep_spare=False)``
(no sandbox started ahead) and evaluates one ``EvalRequest`` built by ``kforge.engine.build_request``
from the same recipe, overrides, shape and seed as the kforge run. So both harnesses apply the same
correctness and timing settings; what differs is only the process and compile structure.

    python benchmarks/throughput/baseline.py SET_DIR OUT_DIR [--budget-s 240] [--all] [--set eval.K=V ...]
    python benchmarks/throughput/baseline.py --one REQUEST.json RESULT.json      (one candidate; internal)

A sequential baseline over a whole set with CUDA candidates takes far longer than one 10-minute device
call, so by default it judges a **stratified random subset** within ``--budget-s`` seconds: classes
are (backend, intended verdict) from the set's manifest; the order covers every class once first,
then keeps each class's share of the sample proportional to its share of the set (seeded, so the
same set gives the same order). The baseline's time for the whole set is extrapolated per class:
sum over classes of (candidates in the class) x (mean seconds per sampled candidate of the class).
``--all`` judges every candidate (no extrapolation). Writes OUT_DIR/baseline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


# -- one candidate, in its own fresh process ----------------------------------------------------------
def judge_one(req_path: Path, res_path: Path) -> int:
    t0 = time.perf_counter()
    from kforge.checks import check_candidate
    from kforge.engine import static_rejection
    from kforge.runtime import protocol as P

    req = P.EvalRequest.from_dict(json.loads(req_path.read_text()))
    problems = [str(v) for v in check_candidate(req.candidate_source, req.backend)]
    if problems:
        res = static_rejection(req.request_id, req.problem_id, problems)
    else:
        import shutil

        from kforge.runtime.judge import Judge  # imports torch: part of the per-candidate cost

        workdir = res_path.parent / f"{req.request_id}-judge"
        judge = Judge(workdir=workdir, keep_spare=False)
        try:
            res = judge.evaluate(req)
        finally:
            judge.close()
            shutil.rmtree(workdir, ignore_errors=True)
    out = res.to_dict()
    out["process_s"] = round(time.perf_counter() - t0, 3)
    res_path.write_text(json.dumps(out))
    return 0


# -- the driver (no torch here) ------------------------------------------------------------------------
def class_of(entry: dict[str, Any]) -> str:
    return f"{entry['backend']}/{entry['intended']}"


def sample_order(entries: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Every class once, then each class in proportion to its size in the set (largest deficit first)."""
    rng = random.Random(seed)
    by: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by.setdefault(class_of(e), []).append(e)
    for v in by.values():
        rng.shuffle(v)
    order: list[dict[str, Any]] = []
    taken = {c: 0 for c in by}
    for c in sorted(by, key=lambda c: (c.startswith("cuda/"), c)):  # the cheap (Triton) classes first
        order.append(by[c][0])
        taken[c] = 1
    total = len(entries)
    while len(order) < total:
        # the class furthest below its share of what has been taken so far
        c = max((c for c in by if taken[c] < len(by[c])),
                key=lambda c: (len(by[c]) / total * (len(order) + 1) - taken[c], -taken[c], c))
        order.append(by[c][taken[c]])
        taken[c] += 1
    return order


def build_requests(set_dir: Path, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """EvalRequests (as dicts) for every candidate of the set, exactly as ``kforge run`` builds them."""
    from kforge.engine import build_request, load_problems
    from kforge.executors.local import visible_gpus
    from kforge.plugins import get_registry
    from kforge.recipe import load_recipe

    reg = get_registry()
    manifest = json.loads((set_dir / "manifest.json").read_text())
    recipes: dict[str, Any] = {}
    reqs: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for i, e in enumerate(manifest["entries"]):
        b = e["backend"]
        if b not in recipes:
            rec = load_recipe(set_dir / f"{b}.toml", overrides, registry=reg)
            problems = {p.id: p for p in load_problems(rec, reg)}
            shapes = rec.tables["problems"]["shapes"]
            # the local executor's rule: GPUs if nvidia-smi sees any, else the CPU; 'auto' -> main on a GPU
            shape = ("main" if visible_gpus() else "small") if shapes == "auto" else shapes
            bname, bopts = rec.plugin("backend")
            recipes[b] = (rec, problems, shape, reg.get("backends", bname)(**bopts))
            info[b] = {"shape": shape, "eval": rec.tables["eval"], "seed": rec.tables["run"]["seed"]}
        rec, problems, shape, backend = recipes[b]
        code = (set_dir / e["id"]).read_text()
        req = build_request(problems[e["problem"]], code, f"b{i:04d}", backend, shape, rec.tables["eval"],
                            rec.tables["run"]["seed"])
        reqs[e["id"]] = req.to_dict()
    return manifest, reqs, info


def run(set_dir: Path, out_dir: Path, budget_s: float, overrides: list[str], everything: bool = False,
        deadline_s: float | None = None, seed: int = 0, per_candidate_cap_s: float = 420.0,
        only: list[str] | None = None) -> dict[str, Any]:
    """Judge the set (or a stratified subset within ``budget_s``), one fresh process per candidate."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "requests"
    work.mkdir(exist_ok=True)
    t_start = time.monotonic()
    hard = t_start + (deadline_s if deadline_s is not None else budget_s * 1.5 + 120)
    manifest, reqs, info = build_requests(set_dir, overrides)
    entries = manifest["entries"]
    if only:
        entries = [e for e in entries if e["id"] in only]
    order = sample_order(entries, seed)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done: list[dict[str, Any]] = []
    skipped_for_time = 0
    for e in order:
        now = time.monotonic()
        if not everything and now - t_start >= budget_s:
            break
        # don't start one that cannot finish before the hard deadline (by the class's mean so far)
        seen = [d["seconds"] for d in done if d["class"] == class_of(e)]
        guess = statistics.fmean(seen) if seen else (60.0 if e["backend"] == "cuda" else 15.0)
        if now + guess > hard:
            skipped_for_time += 1
            continue
        rid = reqs[e["id"]]["request_id"]
        rq, rs = work / f"{rid}.json", work / f"{rid}.result.json"
        rq.write_text(json.dumps(reqs[e["id"]]))
        rs.unlink(missing_ok=True)
        t0 = time.monotonic()
        cap = max(5.0, min(per_candidate_cap_s, hard - t0))
        try:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(rq), str(rs)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=cap,
                                  start_new_session=True)
            err = proc.stderr.decode(errors="replace")[-2000:] if proc.returncode else ""
        except subprocess.TimeoutExpired:
            err = f"killed after {cap:.0f} s (the harness's per-candidate cap)"
        seconds = time.monotonic() - t0
        row: dict[str, Any] = {"id": e["id"], "class": class_of(e), "intended": e["intended"],
                               "seconds": round(seconds, 3)}
        if rs.is_file():
            res = json.loads(rs.read_text())
            row.update(status=res["status"], guard=res.get("guard"), error=(res.get("error") or "")[:300],
                       durations_s=res.get("durations_s", {}), process_s=res.get("process_s"),
                       median_ms=(res.get("timing") or {}).get("median_ms"),
                       speedup=res.get("speedup"), flags=res.get("flags", []))
        else:
            row.update(status="harness_error", guard=None, error=err)
        done.append(row)
        print(f"baseline {len(done):3d} {e['id']:<58} {row['status']:<14} {seconds:6.1f} s", flush=True)
    elapsed = time.monotonic() - t_start
    summary = extrapolate(entries, done)
    summary.update(elapsed_s=round(elapsed, 2), budget_s=budget_s, judged=len(done), all=everything,
                   skipped_for_time=skipped_for_time, shapes={b: v["shape"] for b, v in info.items()},
                   eval=next(iter(info.values()))["eval"] if info else {}, per_candidate=done,
                   method="one fresh process per candidate, sequential; Judge(keep_spare=False); no compile cache")
    (out_dir / "baseline.json").write_text(json.dumps(summary, indent=1))
    return summary


def extrapolate(entries: list[dict[str, Any]], done: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[class_of(e)] = counts.get(class_of(e), 0) + 1
    classes: dict[str, Any] = {}
    measured = [d for d in done if d["status"] != "harness_error"]
    overall = statistics.fmean(d["seconds"] for d in measured) if measured else None
    total = 0.0
    missing = []
    for c, n in sorted(counts.items()):
        xs = [d["seconds"] for d in measured if d["class"] == c]
        if xs:
            mean = statistics.fmean(xs)
        else:
            same_backend = [d["seconds"] for d in measured if d["class"].split("/")[0] == c.split("/")[0]]
            mean = statistics.fmean(same_backend) if same_backend else (overall or float("nan"))
            missing.append(c)
        classes[c] = {"in_set": n, "sampled": len(xs), "mean_s": round(mean, 3),
                      "sd_s": round(statistics.stdev(xs), 3) if len(xs) > 1 else None,
                      "min_s": round(min(xs), 3) if xs else None, "max_s": round(max(xs), 3) if xs else None}
        total += n * mean
    n_total = sum(counts.values())
    return {"classes": classes, "unsampled_classes": missing, "set_size": n_total,
            "extrapolated_total_s": round(total, 2),
            "candidates_per_gpu_minute": round(n_total / (total / 60.0), 3) if total > 0 else None}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        sys.exit(judge_one(Path(sys.argv[2]), Path(sys.argv[3])))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--budget-s", type=float, default=240.0, help="start no candidate after this many seconds")
    ap.add_argument("--deadline-s", type=float, default=None, help="hard limit: nothing runs past it")
    ap.add_argument("--all", action="store_true", help="judge every candidate (no subset, no extrapolation)")
    ap.add_argument("--only", action="append", default=None, help="judge only this candidate id (repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = run(a.set_dir, a.out_dir, a.budget_s, a.overrides, a.all, a.deadline_s, a.seed, only=a.only)
    print(json.dumps({k: v for k, v in s.items() if k != "per_candidate"}, indent=1))


if __name__ == "__main__":
    main()
