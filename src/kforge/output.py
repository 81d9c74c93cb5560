"""What a run shows: a live table on stderr (a terminal), plain lines (no terminal), JSON lines (--json)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kforge.metrics import ACCEPTED, apply_retimes

STATUS_STYLE = {"correct": "green", "incorrect": "red", "compile_error": "yellow", "runtime_error": "magenta",
                "timeout": "magenta", "rejected": "red bold", "infra_error": "white on red"}


def fmt_speedup(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}x"


class JsonLines:
    """One JSON object per line on stdout, each with an "event" key."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()


def _new_row(last: str) -> dict[str, Any]:
    return {"tried": 0, "correct": 0, "best": None, "best_cand": None, "last": last, "time_ms": None,
            "baseline_ms": None, "roofline": None, "vs_compile": None, "retimes": [], "judged": {}}


class ProblemRows:
    """Per-problem state for the table, built from events.

    A row shows the problem's reported best: the fastest correct candidate, or, once the search
    re-timed its winner (``retime`` events), the re-timed figures (:func:`kforge.metrics.apply_retimes`).
    Columns that only some runs have appear once a value arrives: ``vs compile`` (with ``[eval]
    baseline_compile``), ``island/gen`` (evolution: where the best was born) and ``re-timed``."""

    def __init__(self, problem_ids: list[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {p: _new_row("waiting") for p in problem_ids}
        self.device: str | None = None
        self.cpu = False

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind not in ("result", "retime"):
            return
        row = self.rows.setdefault(event["problem"], _new_row(""))
        if kind == "retime":
            row["retimes"].append({"problem_id": event["problem"], "candidate_id": event["candidate"],
                                   "verdict": event.get("verdict"), "status": event.get("status"),
                                   "speedup": event.get("speedup"), "first_speedup": event.get("first_speedup"),
                                   "time_ms": event.get("time_ms"), "baseline_ms": event.get("baseline_ms"),
                                   "roofline": event.get("roofline_fraction"),
                                   "vs_compile": event.get("speedup_vs_compile")})
            return
        row["tried"] += 1
        row["last"] = event["status"]
        self.device = event.get("device") or self.device
        self.cpu = self.cpu or event.get("device_kind") == "cpu"
        if event["status"] == "correct":
            row["correct"] += 1
            row["judged"][event["candidate"]] = {k: event.get(k) for k in ("island", "generation")}
            vc = event.get("speedup_vs_compile")
            if vc is not None and (row["vs_compile"] is None or vc > row["vs_compile"]):
                row["vs_compile"] = vc
            s = event.get("speedup")
            if s is not None and (row["best"] is None or s > row["best"]):
                row.update(best=s, best_cand=event["candidate"], time_ms=event.get("time_ms"),
                           baseline_ms=event.get("baseline_ms"), roofline=event.get("roofline_fraction"))

    def shown(self, pid: str) -> dict[str, Any]:
        """What the row shows: speedup, times, roofline, where the best was born, the re-timing's word."""
        r = self.rows[pid]
        out = {"best": r["best"], "cand": r["best_cand"], "time_ms": r["time_ms"], "baseline_ms": r["baseline_ms"],
               "roofline": r["roofline"], "vs_compile": r["vs_compile"], "retimed": None}
        if r["retimes"]:
            first = {pid: {"candidate": r["best_cand"], "status": "correct" if r["best_cand"] else r["last"],
                           "speedup": r["best"]}}
            rep = apply_retimes(first, r["retimes"])[pid]
            if rep.get("retimed"):
                pick = next((t for t in reversed(r["retimes"]) if t["candidate_id"] == rep["candidate"]
                             and t["verdict"] == rep["verdict"]), None)
                out.update(best=rep["speedup"], cand=rep["candidate"], time_ms=(pick or {}).get("time_ms"),
                           baseline_ms=(pick or {}).get("baseline_ms"), roofline=(pick or {}).get("roofline"))
                if pick is not None and pick.get("vs_compile") is not None:
                    out["vs_compile"] = pick["vs_compile"]
                first_s = fmt_speedup(rep.get("first_speedup"))
                flagged = len(rep.get("flagged") or [])
                if rep["verdict"] == ACCEPTED:
                    out["retimed"] = f"ok (first {first_s})" + (f", {flagged} flagged" if flagged else "")
                elif rep["verdict"] == "slower":
                    out["retimed"] = f"slower (first {first_s})"
                else:
                    out["retimed"] = f"{rep['verdict']} on fresh inputs"
            else:
                out["retimed"] = "not re-timed (machine)"
        where = r["judged"].get(out["cand"] or "", {})
        out["where"] = (f"i{where['island']} g{where['generation']}"
                        if where.get("island") is not None and where.get("generation") is not None else None)
        return out

    def table(self, title: str = "kforge") -> Table:
        label = " (CPU timings: Triton interpreter, not GPU speed)" if self.cpu else ""
        t = Table(title=f"{title}{label}", caption=f"device: {self.device}" if self.device else None,
                  header_style="bold")
        shown = {pid: self.shown(pid) for pid in self.rows}
        compile_col = any(v["vs_compile"] is not None for v in shown.values())
        where_col = any(v["where"] is not None for v in shown.values())
        retime_col = any(v["retimed"] is not None for v in shown.values())
        t.add_column("problem")
        t.add_column("best speedup", justify="right")
        if compile_col:
            t.add_column("vs compile", justify="right")
        t.add_column("best time (ms)", justify="right")
        t.add_column("eager (ms)", justify="right")
        t.add_column("roofline", justify="right")
        if where_col:
            t.add_column("island/gen")
        if retime_col:
            t.add_column("re-timed")
        t.add_column("tried", justify="right")
        t.add_column("correct", justify="right")
        t.add_column("last status")
        for pid, r in self.rows.items():
            v = shown[pid]
            cells: list[Any] = [pid, fmt_speedup(v["best"])]
            if compile_col:
                cells.append(fmt_speedup(v["vs_compile"]))
            cells += [_ms(v["time_ms"]), _ms(v["baseline_ms"]),
                      "-" if v["roofline"] is None else f"{100 * v['roofline']:.0f}%"]
            if where_col:
                cells.append(v["where"] or "-")
            if retime_col:
                cells.append(v["retimed"] or "-")
            cells += [str(r["tried"]), str(r["correct"]), Text(r["last"], style=STATUS_STYLE.get(r["last"], ""))]
            t.add_row(*cells)
        return t


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


class LiveTable:
    """A rich live table on stderr, updated as each result arrives."""

    def __init__(self, problem_ids: list[str], console: Console, title: str) -> None:
        self.rows = ProblemRows(problem_ids)
        self.console = console
        self.title = title
        self.live = Live(self.rows.table(title), console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self.rows.table(self.title))
        self.live.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        self.rows.update(event)
        if event["event"] in ("result", "retime"):
            self.live.update(self.rows.table(self.title))


class PlainLines:
    """One line per result on stderr when not on a terminal (no spinners, no redraws)."""

    def __init__(self, console: Console, problem_ids: list[str], title: str) -> None:
        self.console = console
        self.rows = ProblemRows(problem_ids)
        self.title = title

    def __call__(self, event: dict[str, Any]) -> None:
        self.rows.update(event)
        if event["event"] == "summary":
            self.console.print(self.rows.table(self.title))
        elif event["event"] == "result":
            extra = f" speedup {fmt_speedup(event.get('speedup'))}" if event["status"] == "correct" else ""
            why = f" [{event.get('guard')}] {str(event.get('error') or '').splitlines()[0][:160]}" \
                if event["status"] != "correct" and event.get("error") else ""
            self.console.print(f"{event['problem']} {event['candidate']} ({event.get('label')}): "
                               f"{event['status']}{extra}{why}", markup=False, highlight=False)
        elif event["event"] == "retime":
            got = f" speedup {fmt_speedup(event.get('speedup'))}" if event["status"] == "correct" else ""
            why = f" [{event.get('guard')}] {str(event.get('error') or '').splitlines()[0][:160]}" \
                if event["status"] != "correct" and event.get("error") else ""
            self.console.print(f"{event['problem']} {event['candidate']} re-timed: {event['status']}{got} (first "
                               f"{fmt_speedup(event.get('first_speedup'))}): {event.get('verdict')}{why}",
                               markup=False, highlight=False)
        elif event["event"] in ("budget", "error") and event.get("message"):
            self.console.print(f"! {event['message']}", markup=False, highlight=False)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    fp = summary.get("fast_p", {})
    gm = summary.get("geomean_speedup")
    console.print(f"[bold]Summary[/]: {summary['correct']} correct of {summary['candidates']} candidates; "
                  f"{summary['problems_solved']}/{summary['problems']} problems solved "
                  f"(shape: {summary.get('shape')}, device: {summary.get('device')})")
    console.print("  fast_p: " + "  ".join(f"p={k}: {v:.2f}" for k, v in fp.items()))
    console.print(f"  geomean speedup (best correct per problem): {fmt_speedup(gm)}")
    retimed = {p: b for p, b in (summary.get("best") or {}).items() if "retimed" in b}
    if retimed:
        parts = []
        for pid, b in retimed.items():
            if not b.get("retimed"):
                word = "not re-timed (the machine failed)"
            elif b.get("status") == "correct":
                word = f"{fmt_speedup(b.get('speedup'))} (first {fmt_speedup(b.get('first_speedup'))}, {b.get('verdict')})"
            else:
                word = f"none: {b.get('candidate')} was {b.get('verdict')} on fresh inputs"
            others = [f"{f['candidate']} {f['verdict']}" for f in b.get("flagged") or []
                      if not (f["candidate"] == b.get("candidate") and f["verdict"] == b.get("verdict"))]
            parts.append(f"{pid} {word}" + (f", flagged: {', '.join(others)}" if others else ""))
        console.print("  re-timed winners: " + "; ".join(parts), markup=False, highlight=False)
    where = {p: b for p, b in (summary.get("best") or {}).items() if "island" in b and "generation" in b}
    if where:
        console.print("  best born on: " + ", ".join(f"{p} island {b['island']} generation {b['generation']}"
                                                      for p, b in where.items()), markup=False, highlight=False)
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.get("statuses", {}).items()))
    console.print(f"  verdicts: {statuses or 'none'}")
    if summary.get("stopped"):
        console.print(f"  stopped: {summary['stopped']}")
    console.print(f"  run directory: {summary['run_dir']}")
