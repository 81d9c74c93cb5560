"""Run reports: the figures of a run, read from its store, written as Markdown and as one
self-contained HTML file with the plots embedded.

Everything here reads the store read-only, so it works on a run that is still going. matplotlib is
imported only when plots are drawn (``pip install 'kforge[report]'``); without it the reports are
written without plots and say so.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kforge.metrics import FAST_P, apply_retimes, geomean, summarise_run
from kforge.store import DB_NAME, Store

PLOTS = ("fast_p", "best_over_time", "speedup_distribution")
PLOT_TITLES = {
    "fast_p": "fast_p against p",
    "best_over_time": "Best speedup over time, per problem",
    "speedup_distribution": "Distribution of speedups (correct candidates)",
}


class ReadOnlyStore(Store):
    """A :class:`Store` opened read-only: the same queries, and no write can take a lock.

    SQLite's WAL mode lets this reader look at a run while the engine writes it; each query is its own
    short read transaction (autocommit), so the reader never holds a snapshot that blocks the writer.
    """

    def __init__(self, run_dir: str | Path) -> None:  # noqa: D107 - replaces Store.__init__ on purpose
        self.run_dir = Path(run_dir)
        path = self.run_dir / DB_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a kforge run directory (no {DB_NAME})")
        self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10,
                                  isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row

    def metas(self) -> dict[str, Any]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT key, value FROM meta")}


def open_run(run_dir: str | Path) -> ReadOnlyStore:
    return ReadOnlyStore(run_dir)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / DB_NAME).is_file()


def fmt_x(s: float | None) -> str:
    """A speedup as text: two significant digits under 0.1x (CPU runs), two decimals under 10x, one above."""
    if s is None:
        return "-"
    if s < 0.1:
        return f"{s:.2g}x"
    return f"{s:.2f}x" if s < 10 else f"{s:.1f}x"


def fmt_pct(f: float | None) -> str:
    return "-" if f is None else f"{100 * f:.0f}%"


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


@dataclass
class ProblemStats:
    """What the run knows about one problem, built one result at a time (the dashboard's rows and the
    report's table use the same rules as :func:`kforge.metrics.best_per_problem`). Once the search
    re-timed a winner (:meth:`add_retime`), the ``best_*`` figures are the reported, re-timed ones
    (:func:`kforge.metrics.apply_retimes`); ``first_speedup`` keeps the first judgings' best."""

    id: str
    name: str = ""
    tried: int = 0  # judged (or statically rejected) candidates
    correct: int = 0
    in_flight: int = 0  # accepted candidates without a result yet
    best_speedup: float | None = None  # highest speedup vs eager of a correct candidate
    best_candidate: str | None = None
    best_vs_compile: float | None = None  # highest speedup vs torch.compile of a correct candidate
    best_roofline: float | None = None  # the roofline fraction of the best (vs eager) candidate
    best_time_ms: float | None = None
    baseline_ms: float | None = None
    first_correct_s: float | None = None  # seconds from the run's start to its first correct result
    last_status: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best) at each improvement
    history: list[float] = field(default_factory=list)  # best so far after each result (0: none yet)
    first_speedup: float | None = None  # the first judgings' best speedup vs eager
    first: dict[str, Any] = field(default_factory=dict)  # that candidate's figures
    retimes: list[dict[str, Any]] = field(default_factory=list)  # re-timings of winners, as the store's rows
    retime: dict[str, Any] | None = None  # what apply_retimes reports for the problem (None: no re-timing)

    def add_result(self, *, candidate: str, status: str, speedup: float | None = None,
                   vs_compile: float | None = None, roofline: float | None = None, time_ms: float | None = None,
                   baseline_ms: float | None = None, t: float | None = None) -> bool:
        """Count one result; True when it is the problem's new best."""
        self.tried += 1
        self.last_status = status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        improved = False
        if status == "correct":
            self.correct += 1
            if self.first_correct_s is None and t is not None:
                self.first_correct_s = t
            if vs_compile is not None and (self.best_vs_compile is None or vs_compile > self.best_vs_compile):
                self.best_vs_compile = vs_compile
            if speedup is not None and (self.first_speedup is None or speedup > self.first_speedup):
                self.first_speedup = speedup
                self.first = {"candidate": candidate, "roofline": roofline, "time_ms": time_ms,
                              "baseline_ms": baseline_ms}
                self.best_speedup, self.best_candidate = speedup, candidate
                self.best_roofline, self.best_time_ms, self.baseline_ms = roofline, time_ms, baseline_ms
                improved = True
                if t is not None:
                    self.curve.append((t, speedup))
                self._report()
            elif self.best_candidate is None:
                self.best_candidate = candidate  # solved without a timing: still the problem's best result
        self.history.append(self.best_speedup or 0.0)
        return improved

    def add_retime(self, row: dict[str, Any]) -> None:
        """A finished re-timing: ``candidate_id``, ``verdict``, ``status``, ``speedup``, ``first_speedup``,
        and for the figures shown ``time_ms``, ``baseline_ms``, ``roofline``."""
        self.retimes.append({"problem_id": self.id, **row})
        self._report()

    def _report(self) -> None:
        if not self.retimes:
            return
        first = {"candidate": self.first.get("candidate"), "status": "correct" if self.first else "incorrect",
                 "speedup": self.first_speedup}
        rep = apply_retimes({self.id: first}, self.retimes)[self.id]
        self.retime = rep
        if not rep.get("retimed"):
            return
        pick: dict[str, Any] = next((r for r in reversed(self.retimes) if r["candidate_id"] == rep["candidate"]
                                     and r["verdict"] == rep["verdict"]), {})
        self.best_speedup, self.best_candidate = rep["speedup"], rep["candidate"]
        self.best_time_ms, self.baseline_ms = pick.get("time_ms"), pick.get("baseline_ms")
        self.best_roofline = pick.get("roofline")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tried": self.tried, "correct": self.correct,
                "best_speedup": self.best_speedup, "best_candidate": self.best_candidate,
                "best_speedup_vs_compile": self.best_vs_compile, "roofline_fraction": self.best_roofline,
                "best_time_ms": self.best_time_ms, "baseline_ms": self.baseline_ms,
                "time_to_first_correct_s": self.first_correct_s, "statuses": dict(self.statuses),
                "first_speedup": self.first_speedup, "retime": self.retime}


# -- figures ----------------------------------------------------------------------------------------
def _result_times(store: ReadOnlyStore) -> dict[str, float]:
    """When each candidate's result was recorded: the ``result`` event's time (the store's timeline)."""
    rows = store.db.execute("SELECT json_extract(data, '$.candidate'), ts FROM events WHERE type = 'result'")
    return {r[0]: float(r[1]) for r in rows if r[0] is not None}


def _started(store: ReadOnlyStore, metas: dict[str, Any]) -> float | None:
    row = store.db.execute("SELECT ts FROM events WHERE type = 'run_started' ORDER BY seq LIMIT 1").fetchone()
    if row is not None:
        return float(row[0])
    started = metas.get("started")
    return float(started) if started is not None else None


def _provenance(run_dir: Path, metas: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / "provenance.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return dict(metas.get("provenance") or {})


def fast_p_curve(best: list[float | None], n_problems: int) -> list[tuple[float, float]]:
    """fast_p as a step function of p: its value at p = 0 and just after each best speedup."""
    if n_problems == 0:
        return []
    values = sorted({s for s in best if s is not None})
    return [(p, sum(1 for s in best if s is not None and s > p) / n_problems) for p in [0.0] + values]


def run_figures(run_dir: str | Path) -> dict[str, Any]:
    """Every figure of a run, as plain JSON-ready data (``kforge report --json`` prints this)."""
    run_dir = Path(run_dir)
    store = open_run(run_dir)
    try:
        metas = store.metas()
        problems = store.problems()
        results = store.results()
        times = _result_times(store)
        started = _started(store, metas)
        usage = store.usage()
        n_candidates = int(store.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0])
        retimes = [r for r in store.retimes() if r.get("verdict")]
        where = store.proposal_params(sorted({r["candidate_id"] for r in results if r.get("candidate_id")}))
    finally:
        store.close()
    problem_ids = [p["id"] for p in problems] or list(dict.fromkeys(r["problem_id"] for r in results))
    stats = {p["id"]: ProblemStats(p["id"], p.get("name") or "") for p in problems}
    for r in results:
        st = stats.setdefault(r["problem_id"], ProblemStats(r["problem_id"]))
        ts = times.get(r.get("candidate_id") or "")
        st.add_result(candidate=r.get("candidate_id") or r.get("request_id") or "?", status=r["status"],
                      speedup=r.get("speedup"), vs_compile=r.get("speedup_vs_compile"),
                      roofline=r.get("roofline_fraction"), time_ms=(r.get("timing") or {}).get("median_ms"),
                      baseline_ms=(r.get("baseline_eager") or {}).get("median_ms"),
                      t=None if ts is None or started is None else max(ts - started, 0.0))
    for rt in retimes:
        data = rt.get("result") or {}
        stats.setdefault(rt["problem_id"], ProblemStats(rt["problem_id"])).add_retime(
            {"candidate_id": rt["candidate_id"], "verdict": rt["verdict"], "status": rt["status"],
             "speedup": rt["speedup"], "first_speedup": rt["first_speedup"],
             "time_ms": (data.get("timing") or {}).get("median_ms"),
             "baseline_ms": (data.get("baseline_eager") or {}).get("median_ms"),
             "roofline": data.get("roofline_fraction")})
    summary = summarise_run(results, problem_ids, retimes)
    durations: dict[str, float] = {}
    judge_by_kind: dict[str, float] = {}
    devices: dict[str, int] = {}
    for r in results:
        for phase, secs in (r.get("durations_s") or {}).items():
            if isinstance(secs, (int, float)):
                durations[phase] = durations.get(phase, 0.0) + float(secs)
        total = (r.get("durations_s") or {}).get("total")
        kind = r.get("device_kind") or "none"
        if isinstance(total, (int, float)):
            judge_by_kind[kind] = judge_by_kind.get(kind, 0.0) + float(total)
        if r.get("device"):
            devices[r["device"]] = devices.get(r["device"], 0) + 1
    stored_summary = metas.get("summary") or {}
    speedups = sorted(r["speedup"] for r in results if r.get("status") == "correct" and r.get("speedup") is not None)
    recipe = metas.get("recipe") or {}
    budget = {k: v for k, v in (recipe.get("budget") or {}).items() if v is not None}
    wall_s = metas.get("elapsed_s", stored_summary.get("wall_s"))
    device_kinds = {r.get("device_kind") for r in results if r.get("device_kind")}
    return {
        "run": {"name": metas.get("name") or run_dir.name, "run_dir": str(run_dir), "status": metas.get("status"),
                "started": started, "started_iso": _iso(started), "wall_s": wall_s,
                "shape": stored_summary.get("shape") or next((p.get("shape_name") for p in problems), None),
                "devices": devices, "cpu_timings": "cpu" in device_kinds, "stopped": stored_summary.get("stopped")},
        "problems": [_with_where(stats[p].as_dict(), where) for p in stats],
        "candidates": n_candidates,
        "results": summary["candidates"],
        "correct": summary["correct"],
        "correctness_rate": summary["correctness_rate"],
        "statuses": summary["statuses"],
        "problems_solved": summary["problems_solved"],
        "fast_p": summary["fast_p"],
        "geomean_speedup": summary["geomean_speedup"],
        "retimes": summary["retimes"],
        "speedups": {"count": len(speedups), "min": speedups[0] if speedups else None,
                     "median": speedups[len(speedups) // 2] if speedups else None,
                     "max": speedups[-1] if speedups else None},
        "usage": usage,
        "judge_time_s": {k: round(v, 3) for k, v in durations.items()},
        "gpu_time_s": round(judge_by_kind.get("cuda", 0.0), 3),
        "cpu_judge_time_s": round(judge_by_kind.get("cpu", 0.0), 3),
        "gpu_busy_fraction": stored_summary.get("gpu_busy_fraction", stored_summary.get("judge_busy_fraction")),
        "budget": {k: {"limit": v, "used": _budget_used(k, n_candidates, usage, wall_s)} for k, v in budget.items()},
        "provenance": _provenance(run_dir, metas),
        "_series": {"curves": {p: st.curve for p, st in stats.items()}, "speedups": speedups,
                    "fast_p_curve": fast_p_curve([st.best_speedup for st in stats.values()], len(stats))},
    }


def _with_where(problem: dict[str, Any], params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The island and generation the best was born on, when the search put them in its proposal."""
    got = params.get(problem.get("best_candidate") or "", {})
    if "island" in got and "generation" in got:
        problem.update(island=got["island"], generation=got["generation"])
    return problem


def _budget_used(key: str, n_candidates: int, usage: dict[str, Any], wall_s: float | None) -> float | None:
    return {"candidates": n_candidates, "tokens": usage.get("tokens"), "usd": usage.get("cost_usd"),
            "wall_clock_s": wall_s}.get(key)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def public(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures without the plot series (what ``--json`` prints)."""
    return {k: v for k, v in figures.items() if not k.startswith("_")}


# -- plots ------------------------------------------------------------------------------------------
def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_plots(figures: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot. Uses matplotlib's object API (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = figures["_series"]
    cpu = figures["run"].get("cpu_timings")
    note = " (CPU timings: not GPU speed)" if cpu else ""
    out: dict[str, bytes] = {}

    def png(fig: Figure) -> bytes:
        import io

        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue()

    # fast_p against p: linear p from 0 past 1 as KernelBench draws it; a log axis when the speedups
    # are far below 1 (CPU runs), where a linear axis would squash every step against p = 0
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    curve = series["fast_p_curve"]
    top = max([2.0] + [1.25 * p for p, _ in curve])
    low = min((p for p, _ in curve if p > 0), default=1.0)
    if low < 0.2:
        ax.set_xscale("log")
        start = low / 2
        xs = [start] + [p for p, _ in curve[1:]] + [top]
        ys = [curve[0][1]] + [f for _, f in curve[1:]] + [curve[-1][1]] if curve else []
    else:
        xs = [p for p, _ in curve] + [top]
        ys = [f for _, f in curve] + [curve[-1][1]] if curve else []
    if curve:
        ax.step(xs, ys, where="post", color="#2a7ab9", linewidth=2)
    ax.axvline(1.0, color="#999999", linestyle="--", linewidth=1)
    ax.set_xlabel("p (speedup over PyTorch eager)" + (", log scale" if low < 0.2 else ""))
    ax.set_ylabel("fast_p")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"fast_p: share of problems with a correct kernel faster than p{note}", fontsize=10)
    ax.grid(alpha=0.3)
    out["fast_p"] = png(fig)

    # best speedup over time per problem
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    values: list[float] = []
    end = max([t for c in series["curves"].values() for t, _ in c] + [float(figures["run"].get("wall_s") or 0.0)])
    for pid, c in series["curves"].items():
        if not c:
            continue
        xs = [t / 60 for t, _ in c] + [end / 60]
        ys = [s for _, s in c] + [c[-1][1]]
        values += ys
        ax.step(xs, ys, where="post", label=pid, linewidth=1.6, marker="o", markevery=list(range(len(c))),
                markersize=3)
    if values and max(values) / max(min(values), 1e-12) > 10:
        ax.set_yscale("log")
    if not values or max(values) > 0.5:  # the eager line, unless it would flatten far slower curves
        ax.axhline(1.0, color="#999999", linestyle="--", linewidth=1)
    ax.set_xlabel("minutes since the run started")
    ax.set_ylabel("best speedup vs eager")
    ax.set_title(f"Best correct speedup over time{note}", fontsize=10)
    if values:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    out["best_over_time"] = png(fig)

    # distribution of speedups
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    speedups = [s for s in series["speedups"] if s > 0]
    edges: list[float] | int
    if speedups:
        lo, hi = min(speedups), max(speedups)
        if hi / lo > 10:
            edges = [10 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * i / 20) for i in range(21)]
            ax.set_xscale("log")
        else:
            edges = 20
        ax.hist(speedups, bins=edges, color="#4c9f70", edgecolor="white")
    if not speedups or max(speedups) > 0.5:
        ax.axvline(1.0, color="#999999", linestyle="--", linewidth=1)
    ax.set_xlabel("speedup vs eager")
    ax.set_ylabel("correct candidates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Speedups of all correct candidates (n={len(speedups)}){note}", fontsize=10)
    ax.grid(alpha=0.3)
    out["speedup_distribution"] = png(fig)
    return out


# -- writing ----------------------------------------------------------------------------------------
def _headline(f: dict[str, Any]) -> list[tuple[str, str]]:
    run = f["run"]
    usage = f["usage"]
    rows = [
        ("status", str(run.get("status"))),
        ("started", str(run.get("started_iso") or "-")),
        ("wall time", fmt_s(run.get("wall_s"))),
        ("device", ", ".join(f"{d} ({n})" for d, n in run["devices"].items()) or "-"),
        ("shape", str(run.get("shape") or "-")),
        ("problems solved", f"{f['problems_solved']} of {len(f['problems'])}"),
        ("geomean speedup (best correct per problem)", fmt_x(f["geomean_speedup"])),
        ("correctness rate", f"{fmt_pct(f['correctness_rate'])} ({f['correct']} of {f['results']} judged)"),
        ("candidates", str(f["candidates"])),
        ("tokens", f"{usage['tokens']:,} ({usage['tokens_in']:,} in, {usage['tokens_out']:,} out)"),
        ("generation cost", f"${usage['cost_usd']:.4f}"),
    ]
    if f["gpu_time_s"] or not f["cpu_judge_time_s"]:
        rows.append(("GPU time (judging)", fmt_s(f["gpu_time_s"])))
    if f["cpu_judge_time_s"]:
        rows.append(("CPU time (judging)", fmt_s(f["cpu_judge_time_s"])))
    if f.get("gpu_busy_fraction") is not None:
        rows.append(("judges busy", fmt_pct(f["gpu_busy_fraction"])))
    if run.get("stopped"):
        rows.append(("stopped", str(run["stopped"])))
    return rows


def _problem_rows(f: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["problem", "best vs eager", "best vs compile", "roofline", "best candidate", "best (ms)",
            "eager (ms)", "tried", "correct", "first correct"]
    retimed = any(p.get("retime") for p in f["problems"])
    where = any("island" in p for p in f["problems"])
    if retimed:
        head.insert(5, "re-timed (first)")
    if where:
        head.insert(5, "island/gen")
    rows = []
    for p in f["problems"]:
        row = [p["id"], fmt_x(p["best_speedup"]), fmt_x(p["best_speedup_vs_compile"]),
               fmt_pct(p["roofline_fraction"]), p["best_candidate"] or "-", _ms(p["best_time_ms"]),
               _ms(p["baseline_ms"]), str(p["tried"]), str(p["correct"]), fmt_s(p["time_to_first_correct_s"])]
        if retimed:
            rt = p.get("retime") or {}
            word = "-" if not rt else (f"{rt.get('verdict')} ({fmt_x(rt.get('first_speedup'))})" if rt.get("retimed")
                                      else "not re-timed")
            if rt.get("flagged"):
                word += "; flagged " + ", ".join(f"{x['candidate']} {x['verdict']}" for x in rt["flagged"])
            row.insert(5, word)
        if where:
            row.insert(5, f"i{p['island']} g{p['generation']}" if "island" in p else "-")
        rows.append(row)
    return head, rows


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _budget_rows(f: dict[str, Any]) -> list[list[str]]:
    out = []
    for key, b in f["budget"].items():
        used, limit = b["used"], b["limit"]
        left = None if used is None else max(limit - used, 0)
        out.append([key, _num(used), _num(limit), _num(left)])
    return out


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def _provenance_rows(prov: dict[str, Any]) -> list[list[str]]:
    dev = prov.get("device") or {}
    rows = [["kforge", str(prov.get("kforge"))], ["git SHA", str(prov.get("git_sha"))],
            ["python", str(prov.get("python"))], ["platform", str(prov.get("platform"))],
            ["command", " ".join(map(str, prov.get("argv") or []))], ["device", str(dev.get("device"))]]
    for key in ("torch", "triton", "cuda", "driver", "sm"):
        if dev.get(key) is not None:
            rows.append([key, str(dev[key])])
    plugins = ", ".join(f"{p['name']} {p.get('version') or ''}".strip() for p in prov.get("plugins") or [])
    rows.append(["plugins", plugins or "-"])
    return rows


def to_markdown(f: dict[str, Any], plot_files: dict[str, str]) -> str:
    run = f["run"]
    parts = [f"# kforge report: {run['name']}", "", f"Run directory: `{run['run_dir']}`", ""]
    if run.get("cpu_timings"):
        parts += ["> CPU timings (Triton interpreter): these speedups are not GPU speedups.", ""]
    parts += [_md_table(["figure", "value"], [list(r) for r in _headline(f)]), ""]
    parts += ["## Problems", "", _md_table(*_problem_rows(f)), ""]
    parts += ["## fast_p", "", _md_table(["p"] + list(f["fast_p"]), [["fast_p"] + [f"{v:.2f}" for v in f["fast_p"].values()]]),
              ""]
    for key in PLOTS:
        if key in plot_files:
            parts += [f"![{PLOT_TITLES[key]}]({plot_files[key]})", ""]
    if not plot_files:
        parts += ["_Plots need matplotlib: `pip install 'kforge[report]'`._", ""]
    parts += ["## Verdicts", "", _md_table(["status", "count"], [[k, str(v)] for k, v in sorted(f["statuses"].items())]),
              ""]
    if f["budget"]:
        parts += ["## Budget", "", _md_table(["budget", "used", "limit", "left"], _budget_rows(f)), ""]
    parts += ["## Provenance", "", _md_table(["", ""], _provenance_rows(f["provenance"])), ""]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}code{background:#f4f4f4;padding:1px 4px}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:6px 12px}img{max-width:100%;margin:0.5em 0}
"""


def _html_table(head: list[str] | None, rows: list[list[str]], numeric_from: int = 1) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for r in rows:
        cells = "".join(f"<td{' class=n' if i >= numeric_from else ''}>{html.escape(c)}</td>" for i, c in enumerate(r))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def to_html(f: dict[str, Any], plots: dict[str, bytes]) -> str:
    run = f["run"]
    esc = html.escape
    parts = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
             f"<title>kforge report: {esc(run['name'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>kforge report: {esc(run['name'])}</h1>", f"<p>Run directory: <code>{esc(run['run_dir'])}</code></p>"]
    if run.get("cpu_timings"):
        parts.append("<p class='note'>CPU timings (Triton interpreter): these speedups are not GPU speedups.</p>")
    parts.append(_html_table(None, [list(r) for r in _headline(f)], numeric_from=99))
    parts.append("<h2>Problems</h2>")
    head, rows = _problem_rows(f)
    parts.append(_html_table(head, rows))
    parts.append("<h2>fast_p</h2>")
    parts.append(_html_table(["p"] + list(f["fast_p"]), [["fast_p"] + [f"{v:.2f}" for v in f["fast_p"].values()]]))
    for key in PLOTS:
        if key in plots:
            data = base64.b64encode(plots[key]).decode()
            parts.append(f"<h3>{esc(PLOT_TITLES[key])}</h3><img alt='{esc(PLOT_TITLES[key])}' "
                         f"src='data:image/png;base64,{data}'>")
    if not plots:
        parts.append("<p><em>Plots need matplotlib: <code>pip install 'kforge[report]'</code>.</em></p>")
    parts.append("<h2>Verdicts</h2>")
    parts.append(_html_table(["status", "count"], [[k, str(v)] for k, v in sorted(f["statuses"].items())]))
    if f["budget"]:
        parts.append("<h2>Budget</h2>")
        parts.append(_html_table(["budget", "used", "limit", "left"], _budget_rows(f)))
    parts.append("<h2>Provenance</h2>")
    parts.append(_html_table(None, _provenance_rows(f["provenance"]), numeric_from=99))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None,
                 figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``report.md`` (with ``plots/*.png`` beside it) and a self-contained ``report.html``.

    Returns the paths written and whether plots were drawn."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    f = figures if figures is not None else run_figures(run_dir)
    plots = render_plots(f) if have_matplotlib() else {}
    plot_files: dict[str, str] = {}
    if plots:
        (out / "plots").mkdir(exist_ok=True)
        for key, data in plots.items():
            (out / "plots" / f"{key}.png").write_bytes(data)
            plot_files[key] = f"plots/{key}.png"
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(f, plot_files))
    page.write_text(to_html(f, plots))
    return {"markdown": str(md), "html": str(page), "plots": [str(out / p) for p in plot_files.values()],
            "plots_drawn": bool(plots)}


# -- compare ----------------------------------------------------------------------------------------
def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Two runs side by side on the problems they share (by id; ``same_problem`` says whether the
    problem's source hash matches, and ``shape`` whether both judged the same shape)."""
    fa, fb = run_figures(run_a), run_figures(run_b)
    hashes = []
    for run in (run_a, run_b):
        store = open_run(run)
        try:
            hashes.append({p["id"]: (p.get("hash"), p.get("shape_name")) for p in store.problems()})
        finally:
            store.close()
    pa = {p["id"]: p for p in fa["problems"]}
    pb = {p["id"]: p for p in fb["problems"]}
    shared = [pid for pid in pa if pid in pb]
    rows = []
    for pid in shared:
        a, b = pa[pid], pb[pid]
        sa, sb = a["best_speedup"], b["best_speedup"]
        ha, hb = hashes[0].get(pid, (None, None)), hashes[1].get(pid, (None, None))
        rows.append({"problem": pid, "a": sa, "b": sb, "ratio": sb / sa if sa and sb else None,
                     "a_correct": a["correct"], "a_tried": a["tried"], "b_correct": b["correct"], "b_tried": b["tried"],
                     "winner": _winner(sa, sb), "same_problem": ha[0] == hb[0], "same_shape": ha[1] == hb[1]})

    def side(f: dict[str, Any]) -> dict[str, Any]:
        best = {p["id"]: p["best_speedup"] for p in f["problems"] if p["id"] in shared}
        n = len(shared)
        return {"run_dir": f["run"]["run_dir"], "name": f["run"]["name"], "devices": f["run"]["devices"],
                "geomean_speedup": geomean([s for s in best.values() if s is not None]),
                "solved": sum(1 for s in best.values() if s is not None),
                "fast_p": {f"{p:g}": (sum(1 for s in best.values() if s is not None and s > p) / n if n else 0.0)
                           for p in FAST_P},
                "correctness_rate": f["correctness_rate"], "usage": f["usage"], "gpu_time_s": f["gpu_time_s"]}

    return {"a": side(fa), "b": side(fb), "shared": shared,
            "only_a": [p for p in pa if p not in pb], "only_b": [p for p in pb if p not in pa], "problems": rows,
            "wins": {"a": sum(r["winner"] == "a" for r in rows), "b": sum(r["winner"] == "b" for r in rows),
                     "tie": sum(r["winner"] == "tie" for r in rows)}}


def _winner(a: float | None, b: float | None) -> str:
    if a is None and b is None:
        return "none"
    if a is None:
        return "b"
    if b is None:
        return "a"
    return "a" if a > b else "b" if b > a else "tie"
