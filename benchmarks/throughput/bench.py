"""Issue #9's throughput benchmark: kforge's local executor against a one-process-per-candidate baseline.

    PYTHONPATH=src python benchmarks/throughput/bench.py OUTDIR          (what run.sh calls)
    python benchmarks/throughput/bench.py --summarise OUTDIR [OUTDIR2]   (figures from earlier parts)

Steps, each bounded so the whole fits one 10-minute device call (TOTAL_S):
1. build the candidate set into OUTDIR/set (make_set.py; deterministic for a checkout);
2. kforge: ``kforge run`` on the set with the local executor (MODE=mixed, the default: one run with
   the ``auto`` backend, so CUDA builds overlap Triton timing; MODE=split: the CUDA recipe then the
   Triton recipe, two runs), with a fresh build cache
   (KFORGE_CACHE_DIR), torch extensions dir and Triton cache under OUTDIR, interrupted cleanly
   (SIGINT, summary still written) after KFORGE_LIMIT_S; nvidia-smi samples GPU utilisation meanwhile;
3. baseline: baseline.py, one fresh process per candidate, sequential, same recipe and overrides, its
   own fresh caches; a stratified subset within BASELINE_BUDGET_S, extrapolated per class
   (BASELINE_ALL=1: every candidate);
4. figures: candidates per GPU-minute of each, the speedup, kforge's busy fraction, the compile/timing
   split, and the verdicts of every candidate both judged, compared. Printed last and written to
   OUTDIR/throughput.json (with each candidate's verdict and durations_s).

Settings (environment): MODE, PART (all|kforge|baseline), SHAPES (auto|main|small; default: the
recipe's auto = main on a GPU), TRIALS, WARMUP, MIN_SAMPLES, MAX_SAMPLES (50), MAX_TIMING_S (1.0),
HELDOUT, COMPILE_WORKERS, EXTRA_SET (more --set assignments, space-separated), TOTAL_S (480),
KFORGE_LIMIT_S (270), JUDGES_PER_GPU (the executor's default), BASELINE_BUDGET_S (150), BASELINE_ALL, SET_PROBLEMS, CUDA_N (make_set.py),
KEEP_CACHE=1 (keep OUTDIR/cache, the fresh caches both harnesses built; removed by default), RETIME=1
(keep best-of-n's re-timing of each winner in the kforge runs; off by default: each candidate judged once).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

T0 = time.monotonic()


def env(name: str, default: str | None = None) -> str | None:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def overrides() -> list[str]:
    """The --set assignments both harnesses get."""
    out = []
    for var, key in (("SHAPES", "problems.shapes"), ("TRIALS", "eval.trials"), ("WARMUP", "eval.warmup"),
                     ("MIN_SAMPLES", "eval.min_samples"), ("HELDOUT", "eval.heldout")):
        if env(var):
            out.append(f"{key}={env(var)}")
    out.append(f"eval.max_samples={env('MAX_SAMPLES', '50')}")
    out.append(f"eval.max_timing_s={env('MAX_TIMING_S', '1.0')}")
    out += (env("EXTRA_SET") or "").split()
    return out


def kforge_overrides() -> list[str]:
    """kforge-only settings: the compile stage's workers (COMPILE_WORKERS), if this checkout's local
    executor has that option; and no re-timing of each problem's winner (best-of-n's retime_winner), so
    that both harnesses judge each candidate exactly once (RETIME=1 keeps kforge's default re-timing,
    extra GPU work the baseline does not do)."""
    from kforge.executors.local import LocalExecutor
    from kforge.searches.best_of_n import BestOfN

    names = {o.name for o in LocalExecutor.options}
    out = []
    if env("COMPILE_WORKERS") is not None:
        if "compile_workers" in names:
            out.append(f"executor.compile_workers={env('COMPILE_WORKERS')}")
        else:
            log("COMPILE_WORKERS is set but this local executor has no compile_workers option: ignored")
    if env("JUDGES_PER_GPU") is not None:
        out.append(f"executor.judges_per_gpu={env('JUDGES_PER_GPU')}")
    if env("RETIME") != "1" and "retime_winner" in {o.name for o in BestOfN.options}:
        out.append("search.retime_winner=false")
    return out


def fresh_caches(base: Path) -> dict[str, str]:
    """Empty caches for one harness: kforge's build cache, torch's extensions dir, Triton's cache."""
    dirs = {"KFORGE_CACHE_DIR": base / "kforge-build", "TORCH_EXTENSIONS_DIR": base / "torch-extensions",
            "TRITON_CACHE_DIR": base / "triton"}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    return {k: str(v) for k, v in dirs.items()}


class GpuSampler:
    """nvidia-smi utilization.gpu every 200 ms (the share of time a kernel was running), if there is one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        smi = shutil.which("nvidia-smi")
        if smi:
            self.f = open(path, "wb")
            self.proc = subprocess.Popen([smi, "--query-gpu=index,utilization.gpu,clocks.sm,power.draw",
                                          "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=self.f, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.f.close()
        utils = []
        for line in self.path.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0] == "0":  # the first visible GPU
                try:
                    utils.append(float(parts[1]))
                except ValueError:
                    pass
        if not utils:
            return None
        return {"samples": len(utils), "mean_utilization": round(statistics.fmean(utils) / 100, 3),
                "fraction_of_samples_busy": round(sum(u > 0 for u in utils) / len(utils), 3)}


def run_kforge_cmd(cmd: list[str], out: Path, limit_s: float, extra_env: dict[str, str]) -> dict[str, Any]:
    """One ``kforge run``: its wall time from process start to exit; SIGINT (a clean stop) at the limit."""
    e = dict(os.environ, **extra_env)
    e["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    t0 = time.monotonic()
    with open(out.with_suffix(".jsonl"), "wb") as so, open(out.with_suffix(".err"), "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=e, cwd=ROOT)
        interrupted = False
        try:
            proc.wait(timeout=max(limit_s, 1))
        except subprocess.TimeoutExpired:
            interrupted = True
            log(f"kforge run over {limit_s:.0f} s: interrupting it (SIGINT, a clean stop)")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"cmd": " ".join(cmd), "wall_s": round(time.monotonic() - t0, 3), "exit": proc.returncode,
            "interrupted": interrupted}


def kforge_part(outdir: Path, set_dir: Path, mode: str, limit_s: float) -> dict[str, Any]:
    kdir = outdir / "kforge"
    shutil.rmtree(kdir, ignore_errors=True)
    kdir.mkdir(parents=True)
    caches = fresh_caches(outdir / "cache" / "kforge")
    sets = overrides() + kforge_overrides()
    runs = []
    if mode == "mixed":
        plan = [("mixed", [sys.executable, "-m", "kforge", "run", str(set_dir / "mixed.toml")])]
    else:
        plan = [(b, [sys.executable, "-m", "kforge", "run", str(set_dir / f"{b}.toml")])
                for b in ("cuda", "triton") if (set_dir / f"{b}.toml").is_file()]
    sampler = GpuSampler(kdir / "nvidia-smi.csv")
    t_start = time.monotonic()
    for name, cmd in plan:
        left = limit_s - (time.monotonic() - t_start)
        if left <= 5:
            log(f"no time left for the {name} run")
            break
        run_dir = kdir / f"run-{name}"
        full = cmd + ["--json", "--run-dir", str(run_dir)] + [x for s in sets for x in ("--set", s)]
        log(f"kforge: {name} run ({left:.0f} s left)")
        r = run_kforge_cmd(full, kdir / name, left, caches)
        r.update(name=name, run_dir=str(run_dir))
        r.update(read_store(run_dir, set_dir))
        runs.append(r)
        log(f"kforge: {name} run: {r.get('judged', 0)} judged in {r['wall_s']:.1f} s (exit {r['exit']})")
        if r["exit"] not in (0, 1, 130) or not r.get("judged"):
            err = (kdir / f"{name}.err").read_text(errors="replace")[-3000:]
            log(f"kforge: {name} run's stderr (tail):\n{err}")
    gpu = sampler.stop()
    out = combine_kforge(runs, gpu)
    out.update(mode=mode, overrides=sets, caches=caches)
    (outdir / "kforge.json").write_text(json.dumps(out, indent=1))
    return out


def read_store(run_dir: Path, set_dir: Path) -> dict[str, Any]:
    from kforge.store import Store

    if not (run_dir / "kforge.db").is_file():
        return {"judged": 0, "per_candidate": [], "summary": None}
    st = Store(run_dir)
    try:
        summary = st.get_meta("summary")
        cands = {c["id"]: c for c in st.candidates()}
        rows = []
        for r in st.results():
            c = cands.get(r["candidate_id"], {})
            meta = json.loads(c.get("meta") or "{}")
            rows.append({"id": candidate_id(meta.get("file"), set_dir), "status": r["status"], "guard": r.get("guard"),
                         "error": (r.get("error") or "")[:300], "durations_s": r.get("durations_s") or {},
                         "median_ms": (r.get("timing") or {}).get("median_ms"), "speedup": r.get("speedup"),
                         "flags": r.get("flags") or [], "device": r.get("device"),
                         "diagnostics": r.get("diagnostics") or {}})
        try:
            ex = json.loads((run_dir / "provenance.json").read_text())["executor"]
            workers = int(ex["workers"])
            gpus = len(set(ex.get("devices") or [])) or 1  # judges_per_gpu > 1: several judges, one GPU
        except (OSError, ValueError, KeyError, TypeError):
            workers = gpus = 1
        return {"judged": len(rows), "per_candidate": rows, "summary": summary, "workers": workers, "gpus": gpus,
                "store_bytes": sum(f.stat().st_size for f in run_dir.glob("kforge.db*"))}
    finally:
        st.close()


def candidate_id(file: str | None, set_dir: Path) -> str | None:
    """The manifest id (backend/problem/name) of a replayed file, from either tree."""
    if not file:
        return None
    p = Path(file).resolve()
    try:
        rel = p.relative_to(set_dir.resolve())
    except ValueError:
        return str(p)
    parts = rel.parts
    if parts[0] == "mixed":  # mixed/<problem>/<backend>-<name>
        backend, name = parts[2].split("-", 1)
        return f"{backend}/{parts[1]}/{name}"
    return str(rel)


def combine_kforge(runs: list[dict[str, Any]], gpu: dict[str, Any] | None) -> dict[str, Any]:
    rows = [r for run in runs for r in run.get("per_candidate", [])]
    wall = sum(r["wall_s"] for r in runs)
    busy_w = busy_n = 0.0
    per_run = []
    n_gpus = max([int(run.get("gpus") or 1) for run in runs] or [1])
    for run in runs:
        s = run.get("summary") or {}
        busy = s.get("gpu_busy_fraction", s.get("judge_busy_fraction"))
        if busy is not None and s.get("wall_s"):
            busy_w += busy * s["wall_s"]
            busy_n += s["wall_s"]
        per_run.append({"name": run["name"], "judged": run.get("judged", 0), "wall_s": run["wall_s"],
                        "summary_wall_s": s.get("wall_s"), "busy_fraction": busy, "interrupted": run["interrupted"],
                        "exit": run["exit"], "device": s.get("device"), "shape": s.get("shape"),
                        "executor_stats": s.get("executor_stats"), "store_bytes": run.get("store_bytes")})
    split: dict[str, float] = {}
    for r in rows:
        for k, v in (r.get("durations_s") or {}).items():
            if isinstance(v, (int, float)):
                split[k] = round(split.get(k, 0.0) + float(v), 3)
    judged = len(rows)
    staged = [r for r in rows if "compile_stage" in (r.get("flags") or [])]
    # what the judge (the GPU) spent: every result's total, less those the compile stage decided alone
    split["judge_total"] = round(sum(float((r.get("durations_s") or {}).get("total", 0.0)) for r in rows
                                     if r not in staged), 3)
    split["decided_by_compile_stage"] = len(staged)
    return {"judged": judged, "wall_s": round(wall, 3), "gpus": n_gpus, "breakdown": breakdown(rows),
            "judges": max([int(run.get("workers") or 1) for run in runs] or [1]),
            "candidates_per_gpu_minute": round(judged / (wall * n_gpus / 60), 3) if wall > 0 else None,
            "busy_fraction": round(busy_w / busy_n, 3) if busy_n else None,
            "busy_fraction_key": "gpu_busy_fraction" if any(
                "gpu_busy_fraction" in (r.get("summary") or {}) for r in runs) else "judge_busy_fraction",
            "nvidia_smi": gpu, "durations_sum_s": split, "runs": per_run, "per_candidate": rows}


def breakdown(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the judges' time and memory went, over every result: per sandbox command the calls, the
    round trips as the judge saw them and the time the sandbox said it was busy (the rest is IPC and
    the judge's side of each call), and the peak GPU memory of one judge and of one sandbox."""
    cmds: dict[str, dict[str, float]] = {}
    peaks: dict[str, float] = {}
    split: dict[str, float] = {}  # the correctness phase's trials: reference, sandbox, decode, check
    for r in rows:
        d = r.get("diagnostics") or {}
        for cmd, st in (d.get("sandbox") or {}).items():
            c = cmds.setdefault(cmd, {"calls": 0, "round_trip_s": 0.0, "busy_s": 0.0})
            for key in c:
                c[key] = round(c[key] + float(st.get(key) or 0), 3)
        for key in ("judge_peak_gib", "sandbox_peak_gib"):
            if isinstance(d.get(key), (int, float)):
                peaks[key] = max(peaks.get(key, 0.0), float(d[key]))
        if isinstance(d.get("correctness_main_s"), (int, float)):
            peaks["correctness_main_s_sum"] = round(peaks.get("correctness_main_s_sum", 0.0) + d["correctness_main_s"], 3)
        for part, v in (d.get("correctness_split_s") or {}).items():
            if isinstance(v, (int, float)):
                split[part] = round(split.get(part, 0.0) + float(v), 3)
    return {"sandbox_commands": dict(sorted(cmds.items(), key=lambda kv: -kv[1]["round_trip_s"])),
            "correctness_split_s": split, **peaks}


def baseline_part(outdir: Path, set_dir: Path, budget_s: float, deadline_s: float) -> dict[str, Any]:
    import baseline

    bdir = outdir / "baseline"
    shutil.rmtree(bdir, ignore_errors=True)
    caches = fresh_caches(outdir / "cache" / "baseline")
    os.environ.update(caches)
    os.environ.pop("KFORGE_CACHE_DIR", None)  # the baseline has no build cache; torch's own dir is fresh
    sampler = GpuSampler(outdir / "baseline-nvidia-smi.csv")
    log(f"baseline: budget {budget_s:.0f} s, hard deadline {deadline_s:.0f} s")
    out = baseline.run(set_dir, bdir, budget_s, overrides(), everything=env("BASELINE_ALL") == "1",
                       deadline_s=deadline_s)
    out["nvidia_smi"] = sampler.stop()
    (bdir / "baseline.json").write_text(json.dumps(out, indent=1))
    return out


# -- figures ---------------------------------------------------------------------------------------
def summarise(k: dict[str, Any] | None, b: dict[str, Any] | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"set": (manifest or {}).get("counts")}
    if k:
        out["kforge"] = {x: k.get(x) for x in ("judged", "wall_s", "candidates_per_gpu_minute", "busy_fraction",
                                                 "gpus", "judges", "breakdown",
                                                 "busy_fraction_key", "nvidia_smi", "durations_sum_s", "runs",
                                                 "mode", "overrides")}
        # each candidate's verdict and where its time went (durations_s: the phases, the lock's waits),
        # so one file answers "where did the time go" per candidate, not only in sums
        out["kforge"]["candidates"] = [{"id": r.get("id"), "status": r.get("status"), "guard": r.get("guard"),
                                        "durations_s": r.get("durations_s")} for r in k.get("per_candidate", [])]
    if b:
        out["baseline"] = {x: b.get(x) for x in ("judged", "elapsed_s", "set_size", "extrapolated_total_s",
                                                   "candidates_per_gpu_minute", "classes", "unsampled_classes",
                                                   "all", "nvidia_smi")}
    if k and b and k.get("candidates_per_gpu_minute") and b.get("candidates_per_gpu_minute"):
        out["speedup_candidates_per_gpu_minute"] = round(k["candidates_per_gpu_minute"] / b["candidates_per_gpu_minute"], 3)
        if k.get("judged", 0) < (b.get("set_size") or 0):
            out["note"] = (f"kforge judged {k['judged']} of {b['set_size']} candidates before its time limit; its "
                           "rate is over what it judged")
    if k and b:
        kb = {r["id"]: r for r in k.get("per_candidate", []) if r.get("id")}
        both, mism = 0, []
        cut = [r["id"] for r in b.get("per_candidate", []) if r["status"] == "harness_error"]
        for r in b.get("per_candidate", []):
            if r["id"] in kb and r["status"] != "harness_error":
                both += 1
                a = kb[r["id"]]
                if (a["status"], a.get("guard")) != (r["status"], r.get("guard")):
                    mism.append({"id": r["id"], "kforge": f"{a['status']}/{a.get('guard')}",
                                 "baseline": f"{r['status']}/{r.get('guard')}",
                                 "kforge_error": a.get("error", "")[:160], "baseline_error": (r.get("error") or "")[:160]})
        out["verdicts"] = {"compared": both, "mismatches": mism, "baseline_cut_off": cut}
    if k and manifest:
        intended = {e["id"]: e["intended"] for e in manifest["entries"]}
        table: dict[str, dict[str, int]] = {}
        for r in k.get("per_candidate", []):
            i = intended.get(r.get("id"), "?")
            table.setdefault(i, {})
            table[i][r["status"]] = table[i].get(r["status"], 0) + 1
        out["kforge_verdicts_by_intended"] = table
    return out


def print_figures(s: dict[str, Any]) -> None:
    print("\n=== issue #9 throughput ===")
    if s.get("set"):
        print("set:", ", ".join(f"{k}={v}" for k, v in sorted(s["set"].items())))
    k, b = s.get("kforge"), s.get("baseline")
    # the verdicts first: the rate, the utilisation and the breakdown are printed last
    if "verdicts" in s:
        v = s["verdicts"]
        print(f"verdicts compared on {v['compared']} candidates: {len(v['mismatches'])} mismatches")
        if v.get("baseline_cut_off"):
            print(f"  (baseline candidates killed at its deadline, not compared or counted: {v['baseline_cut_off']})")
        for m in v["mismatches"]:
            print(f"  MISMATCH {m['id']}: kforge {m['kforge']} vs baseline {m['baseline']}")
            print(f"     kforge: {m['kforge_error']!r}\n     baseline: {m['baseline_error']!r}")
    if s.get("kforge_verdicts_by_intended"):
        print("kforge verdicts by intended class:", json.dumps(s["kforge_verdicts_by_intended"], sort_keys=True))
    if k:
        print(f"kforge ({k.get('mode')}): {k['judged']} judged in {k['wall_s']:.1f} s wall -> "
              f"{k['candidates_per_gpu_minute']} candidates/GPU-minute")
        for r in k.get("runs") or []:
            print(f"  run {r['name']}: {r['judged']} judged, {r['wall_s']:.1f} s, busy {r['busy_fraction']}, "
                  f"device {r['device']}, shape {r['shape']}, interrupted={r['interrupted']}, "
                  f"stats {r.get('executor_stats')}")
        print(f"  {k['busy_fraction_key']} (judge holding a request / wall, weighted over runs): {k['busy_fraction']}"
              "  (target >= 0.80)")
        if k.get("nvidia_smi"):
            print(f"  nvidia-smi: mean utilization {k['nvidia_smi']['mean_utilization']}, samples busy "
                  f"{k['nvidia_smi']['fraction_of_samples_busy']} ({k['nvidia_smi']['samples']} samples)")
        d = k.get("durations_sum_s") or {}
        print("  durations_s summed over results (s): " + ", ".join(f"{x}={d[x]:.1f}" for x in sorted(d))
              + "  [build: CPU compile stage; compile: the sandbox's import; judge_total: GPU-side]")
        bd = k.get("breakdown") or {}
        if bd.get("sandbox_commands"):
            print("  per sandbox command, summed: calls / round trip s / sandbox busy s: " + "; ".join(
                f"{c} {v['calls']:.0f}/{v['round_trip_s']:.1f}/{v['busy_s']:.1f}" for c, v in bd["sandbox_commands"].items()))
            print(f"  peak GPU memory: one judge {bd.get('judge_peak_gib')} GiB, one sandbox {bd.get('sandbox_peak_gib')} GiB;"
                  f" main-shape correctness {bd.get('correctness_main_s_sum')} s of the correctness sum")
        if bd.get("correctness_split_s"):
            print("  correctness trials, summed (s; the rest of correctness is lock waits and held-out set-up): "
                  + ", ".join(f"{x}={v:.1f}" for x, v in bd["correctness_split_s"].items()))
    if b:
        print(f"baseline: {b['judged']} of {b['set_size']} judged in {b['elapsed_s']:.1f} s; whole set "
              f"{'measured' if b.get('all') else 'extrapolated per class'}: {b['extrapolated_total_s']:.1f} s -> "
              f"{b['candidates_per_gpu_minute']} candidates/GPU-minute")
        for c, v in (b.get("classes") or {}).items():
            print(f"  {c:<24} in set {v['in_set']:3d}  sampled {v['sampled']:3d}  mean {v['mean_s']:7.2f} s"
                  f"  sd {v['sd_s']}  range {v['min_s']}-{v['max_s']}")
        if b.get("unsampled_classes"):
            print("  NOT SAMPLED (mean of the backend used):", b["unsampled_classes"])
    if "speedup_candidates_per_gpu_minute" in s:
        print(f"speedup kforge / baseline (candidates per GPU-minute): {s['speedup_candidates_per_gpu_minute']}x"
              "  (target >= 5x)")
    if s.get("note"):
        print("note:", s["note"])


def load_json(*paths: Path) -> dict[str, Any] | None:
    for p in paths:
        if p.is_file():
            return json.loads(p.read_text())
    return None


def summarise_dirs(dirs: list[Path]) -> dict[str, Any]:
    """Figures from earlier parts: the first kforge.json found, and every baseline run's candidates pooled
    (the same set, e.g. a short baseline beside kforge and a longer one in its own device call)."""
    import baseline

    k = m = None
    bs = []
    notes = []
    for d in dirs:
        k = k or load_json(d / "kforge.json")
        m2 = load_json(d / "set" / "manifest.json")
        if m and m2:
            a = {e["id"]: e["sha256"] for e in m["entries"]}
            b2 = {e["id"]: e["sha256"] for e in m2["entries"]}
            if a != b2:
                notes.append(f"the candidate set in {d} differs from the first one's: figures pooled anyway")
        m = m or m2
        b1 = load_json(d / "baseline" / "baseline.json")
        if b1:
            bs.append(b1)
    b = None
    if bs:
        rows: dict[str, Any] = {}
        for b1 in bs:
            ids = {e["id"] for e in m["entries"]} if m else None
            for r in b1.get("per_candidate", []):
                if ids is None or r["id"] in ids:
                    rows.setdefault(r["id"], r)
        b = dict(bs[0])
        if m and len(bs) > 1:
            b.update(baseline.extrapolate(m["entries"], list(rows.values())))
            b.update(per_candidate=list(rows.values()), judged=len(rows),
                     elapsed_s=sum(x.get("elapsed_s") or 0 for x in bs),
                     all=len(rows) == len(m["entries"]))
    s = summarise(k, b, m)
    if notes:
        s["note"] = "; ".join(notes + ([s["note"]] if s.get("note") else []))
    return s


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--summarise":
        dirs = [Path(p) for p in sys.argv[2:]]
        s = summarise_dirs(dirs)
        print_figures(s)
        for target in (dirs[0] / "throughput.json", Path.cwd() / "throughput-summary.json"):
            try:  # the first directory may be read-only (fetched results)
                target.write_text(json.dumps(s, indent=1))
                print(f"(wrote {target})")
                break
            except OSError:
                continue
        return
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "throughput-out").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    total = float(env("TOTAL_S", "480"))
    part = env("PART", "all")
    mode = env("MODE", "mixed")
    import make_set

    set_dir = outdir / "set"
    manifest = make_set.write_set(set_dir)
    for n in manifest["notes"]:
        log(f"set: {n}")
    log(f"set: {manifest['counts']}")
    k = b = None
    if part in ("all", "kforge"):
        limit = float(env("KFORGE_LIMIT_S", "270" if part == "all" else str(total - 60)))
        k = kforge_part(outdir, set_dir, mode, min(limit, total - (time.monotonic() - T0) - 30))
    if part in ("all", "baseline"):
        left = total - (time.monotonic() - T0) - 25  # leave time for the figures
        budget = min(float(env("BASELINE_BUDGET_S", "150" if part == "all" else str(total - 120))), left - 60)
        b = baseline_part(outdir, set_dir, max(budget, 0.0), max(left, 1.0))
    s = summarise(k, b, manifest)
    s["elapsed_s"] = round(time.monotonic() - T0, 1)
    s["settings"] = {"MODE": mode, "PART": part, "TOTAL_S": total, "overrides": overrides()}
    (outdir / "throughput.json").write_text(json.dumps(s, indent=1))
    if env("KEEP_CACHE") != "1":  # built libraries and Triton caches: large, and only this run's
        shutil.rmtree(outdir / "cache", ignore_errors=True)
    print_figures(s)
    print(f"(wrote {outdir / 'throughput.json'}; total {s['elapsed_s']} s)")


if __name__ == "__main__":
    main()
