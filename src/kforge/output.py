"""What a run shows: a live table on stderr (a terminal), plain lines (no terminal), JSON lines (--json)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

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


class ProblemRows:
    """Per-problem state for the table, built from events."""

    def __init__(self, problem_ids: list[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            p: {"tried": 0, "correct": 0, "best": None, "best_cand": None, "last": "waiting", "time_ms": None,
                "baseline_ms": None, "roofline": None} for p in problem_ids}
        self.device: str | None = None
        self.cpu = False

    def update(self, event: dict[str, Any]) -> None:
        if event["event"] != "result":
            return
        row = self.rows.setdefault(event["problem"], {"tried": 0, "correct": 0, "best": None, "best_cand": None,
                                                       "last": "", "time_ms": None, "baseline_ms": None,
                                                       "roofline": None})
        row["tried"] += 1
        row["last"] = event["status"]
        self.device = event.get("device") or self.device
        self.cpu = self.cpu or event.get("device_kind") == "cpu"
        if event["status"] == "correct":
            row["correct"] += 1
            s = event.get("speedup")
            if s is not None and (row["best"] is None or s > row["best"]):
                row.update(best=s, best_cand=event["candidate"], time_ms=event.get("time_ms"),
                           baseline_ms=event.get("baseline_ms"), roofline=event.get("roofline_fraction"))

    def table(self, title: str = "kforge") -> Table:
        label = " (CPU timings: Triton interpreter, not GPU speed)" if self.cpu else ""
        t = Table(title=f"{title}{label}", caption=f"device: {self.device}" if self.device else None,
                  header_style="bold")
        t.add_column("problem")
        t.add_column("best speedup", justify="right")
        t.add_column("best time (ms)", justify="right")
        t.add_column("eager (ms)", justify="right")
        t.add_column("roofline", justify="right")
        t.add_column("tried", justify="right")
        t.add_column("correct", justify="right")
        t.add_column("last status")
        for pid, r in self.rows.items():
            t.add_row(pid, fmt_speedup(r["best"]), _ms(r["time_ms"]), _ms(r["baseline_ms"]),
                      "-" if r["roofline"] is None else f"{100 * r['roofline']:.0f}%", str(r["tried"]),
                      str(r["correct"]), Text(r["last"], style=STATUS_STYLE.get(r["last"], "")))
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
        if event["event"] == "result":
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
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.get("statuses", {}).items()))
    console.print(f"  verdicts: {statuses or 'none'}")
    if summary.get("stopped"):
        console.print(f"  stopped: {summary['stopped']}")
    console.print(f"  run directory: {summary['run_dir']}")
