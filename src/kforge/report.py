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
from pathlib import Path
from typing import Any

from kforge import fmt
from kforge.metrics import run_figures_of, summarise
from kforge.store import RunReader, Usage

PLOTS = ("fast_p", "best_over_time", "speedup_distribution")
PLOT_TITLES = {
    "fast_p": "fast_p against p",
    "best_over_time": "Best speedup over time, per problem",
    "speedup_distribution": "Distribution of speedups (correct candidates)",
}


# -- figures ----------------------------------------------------------------------------------------
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
    with RunReader(run_dir) as store:
        metas = store.metas()
        problems = store.problems()
        results = store.results()
        started = store.started()
        usage = store.usage()
        n_candidates = store.counts()["candidates"]
        summary, stats = summarise(store)  # the run's one summary: the final table and the dashboard agree
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
        "problems": [stats[p].as_dict() for p in stats],
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
        "_series": {"stats": stats, "curves": {p: st.curve for p, st in stats.items()}, "speedups": speedups,
                    "fast_p_curve": fast_p_curve([st.best_speedup for st in stats.values()], len(stats))},
    }


def best_over_time(stats: dict[str, Any], end_s: float) -> dict[str, tuple[list[float], list[float]]]:
    """Each problem's best speedup over time, (minutes, speedup), as the plot draws it: a step at each
    first judging that improved it, ending at ``end_s`` on the figure the table reports (a re-timed
    winner's figure; NaN, no line to the end, when the re-timing found none correct and the table
    shows none), so the plot and the table agree."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for pid, st in stats.items():
        curve = list(st.curve)
        if not curve:
            continue
        reported = st.best_speedup if st.best_speedup is not None else float("nan")
        xs = [t / 60 for t, _ in curve] + [end_s / 60]
        ys = [s for _, s in curve] + [reported]
        out[pid] = (xs, ys)
    return out


def _budget_used(key: str, n_candidates: int, usage: Usage, wall_s: float | None) -> float | None:
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
    for pid, (xs, ys) in best_over_time(series["stats"], end).items():
        c = series["curves"][pid]
        values += [y for y in ys if y > 0]
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
        ("wall time", fmt.seconds(run.get("wall_s"))),
        ("device", ", ".join(f"{d} ({n})" for d, n in run["devices"].items()) or "-"),
        ("shape", str(run.get("shape") or "-")),
        ("problems solved", f"{f['problems_solved']} of {len(f['problems'])}"),
        ("geomean speedup (best correct per problem)", fmt.speedup(f["geomean_speedup"])),
        ("correctness rate", f"{fmt.pct(f['correctness_rate'])} ({f['correct']} of {f['results']} judged)"),
        ("candidates", str(f["candidates"])),
        ("tokens", f"{usage['tokens']:,} ({usage['tokens_in']:,} in, {usage['tokens_out']:,} out)"),
        ("generation cost", f"${usage['cost_usd']:.4f}"),
    ]
    if f["gpu_time_s"] or not f["cpu_judge_time_s"]:
        rows.append(("GPU time (judging)", fmt.seconds(f["gpu_time_s"])))
    if f["cpu_judge_time_s"]:
        rows.append(("CPU time (judging)", fmt.seconds(f["cpu_judge_time_s"])))
    if f.get("gpu_busy_fraction") is not None:
        rows.append(("judges busy", fmt.pct(f["gpu_busy_fraction"])))
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
        row = [p["id"], fmt.speedup(p["best_speedup"]), fmt.speedup(p["best_speedup_vs_compile"]),
               fmt.pct(p["roofline_fraction"]), p["best_candidate"] or "-", fmt.ms(p["best_time_ms"]),
               fmt.ms(p["baseline_ms"]), str(p["tried"]), str(p["correct"]), fmt.seconds(p["time_to_first_correct_s"])]
        if retimed:
            rt = p.get("retime") or {}
            word = "-" if not rt else (f"{rt.get('verdict')} ({fmt.speedup(rt.get('first_speedup'))})" if rt.get("retimed")
                                      else "not re-timed")
            if rt.get("flagged"):
                word += "; flagged " + ", ".join(f"{x['candidate']} {x['verdict']}" for x in rt["flagged"])
            row.insert(5, word)
        if where:
            row.insert(5, f"i{p['island']} g{p['generation']}" if "island" in p else "-")
        rows.append(row)
    return head, rows


def _budget_rows(f: dict[str, Any]) -> list[list[str]]:
    out = []
    for key, b in f["budget"].items():
        used, limit = b["used"], b["limit"]
        left = None if used is None else max(limit - used, 0)
        out.append([key, fmt.number(used), fmt.number(limit), fmt.number(left)])
    return out


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
    parts += ["## fast_p", "", _md_table(["p"] + list(f["fast_p"]), [["fast_p"] + [fmt.fraction(v) for v in f["fast_p"].values()]]),
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
    parts.append(_html_table(["p"] + list(f["fast_p"]), [["fast_p"] + [fmt.fraction(v) for v in f["fast_p"].values()]]))
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
        with RunReader(run) as store:
            hashes.append({p["id"]: (p["hash"], p["shape_name"]) for p in store.problems()})
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
        on_shared = run_figures_of(f["_series"]["stats"], shared)  # the same summary, over the shared problems
        return {"run_dir": f["run"]["run_dir"], "name": f["run"]["name"], "devices": f["run"]["devices"],
                "geomean_speedup": on_shared["geomean_speedup"], "solved": on_shared["problems_solved"],
                "fast_p": on_shared["fast_p"], "correctness_rate": f["correctness_rate"], "usage": f["usage"],
                "gpu_time_s": f["gpu_time_s"]}

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
