"""What a run shows: a live table on stderr (a terminal), plain lines (no terminal), JSON lines (--json)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kforge import fmt
from kforge.metrics import ACCEPTED, SLOWER, ProblemSummary, event_record, retime_record
from kforge.store import RunReader

STATUS_STYLE = {"correct": "green", "incorrect": "red", "compile_error": "yellow", "runtime_error": "magenta",
                "timeout": "magenta", "rejected": "red bold", "infra_error": "white on red"}


class JsonLines:
    """One JSON object per line on stdout, each with an "event" key."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()


class ProblemRows:
    """The table's rows: one :class:`kforge.metrics.ProblemSummary` per problem, folded from events.

    A row shows the problem's reported best (the fastest correct candidate, or once the search
    re-timed its winner, the re-timed figures): the same fold as the summary, the report and the
    dashboard. A resumed run first folds what its store already holds (:meth:`seed`). Columns that
    only some runs have appear once a value arrives: ``vs compile`` (with ``[eval]
    baseline_compile``), ``island/gen`` (evolution: where the best was born) and ``re-timed``."""

    def __init__(self, problem_ids: list[str]) -> None:
        self.rows: dict[str, ProblemSummary] = {p: ProblemSummary(p) for p in problem_ids}
        self.device: str | None = None
        self.cpu = False

    def seed(self, run_dir: str | Path) -> None:
        """Fold the results and re-timings a run's store already holds (before a resume adds more)."""
        with RunReader(run_dir) as store:
            for event in store.events(types=("result", "retime")):
                self.update(event)

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "result":
            self.rows.setdefault(event["problem"], ProblemSummary(event["problem"])).add_result(**event_record(event))
            self.device = event.get("device") or self.device
            self.cpu = self.cpu or event.get("device_kind") == "cpu"
        elif kind == "retime":
            self.rows.setdefault(event["problem"], ProblemSummary(event["problem"])).add_retime(retime_record(event))

    def shown(self, pid: str) -> dict[str, Any]:
        """What the row shows: speedup, times, roofline, where the best was born, the re-timing's word."""
        st = self.rows[pid]
        where = st.best_where
        return {"best": st.best_speedup, "cand": st.best_candidate, "time_ms": st.best_time_ms,
                "baseline_ms": st.baseline_ms, "roofline": st.best_roofline, "vs_compile": st.best_vs_compile,
                "retimed": retime_word(st.retime),
                "where": None if where is None else f"i{where[0]} g{where[1]}"}

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
        for pid, st in self.rows.items():
            v = shown[pid]
            cells: list[Any] = [pid, fmt.speedup(v["best"])]
            if compile_col:
                cells.append(fmt.speedup(v["vs_compile"]))
            cells += [fmt.ms(v["time_ms"]), fmt.ms(v["baseline_ms"]), fmt.pct(v["roofline"])]
            if where_col:
                cells.append(v["where"] or "-")
            if retime_col:
                cells.append(v["retimed"] or "-")
            last = st.last_status or "waiting"
            cells += [str(st.tried), str(st.correct), Text(last, style=STATUS_STYLE.get(last, ""))]
            t.add_row(*cells)
        return t


def retime_word(rep: dict[str, Any] | None) -> str | None:
    """What a problem's re-timing says, in a few words (None: no re-timing)."""
    if rep is None:
        return None
    if not rep.get("retimed"):
        return "not re-timed (machine)"
    first = fmt.speedup(rep.get("first_speedup"))
    flagged = len(rep.get("flagged") or [])
    if rep["verdict"] == ACCEPTED:
        return f"ok (first {first})" + (f", {flagged} flagged" if flagged else "")
    if rep["verdict"] == SLOWER:
        return f"slower (first {first})"
    return f"{rep['verdict']} on fresh inputs"


def verdict_line(event: dict[str, Any]) -> str | None:
    """The one line a run prints for an event as it lands (a verdict, a re-timing, a stop), or None."""
    kind = event["event"]
    if kind == "run_started":
        return f"run directory: {event['run_dir']}"
    if kind in ("result", "retime"):
        got = f" speedup {fmt.speedup(event.get('speedup'))}" if event["status"] == "correct" else ""
        error = str(event.get("error") or "").strip()
        why = ""
        if event["status"] != "correct" and error:
            guard = f" [{event['guard']}]" if event.get("guard") else ""
            why = f"{guard} {error.splitlines()[0][:160]}"
        if kind == "result":
            return f"{event['problem']} {event['candidate']} ({event.get('label')}): {event['status']}{got}{why}"
        return (f"{event['problem']} {event['candidate']} re-timed: {event['status']}{got} (first "
                f"{fmt.speedup(event.get('first_speedup'))}): {event.get('verdict')}{why}")
    if kind in ("budget", "error") and event.get("message"):
        return f"! {event['message']}"
    return None


class Progress:
    """Elapsed time, candidates judged (of the budget, when there is one) and an ETA."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.judged = 0
        self.started = time.monotonic()

    def update(self, event: dict[str, Any]) -> None:
        if event["event"] == "result":
            self.judged += 1

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        text = f"elapsed {fmt.seconds(elapsed)}, {self.judged}"
        if not self.total:
            return f"{text} judged"
        text += f"/{self.total} judged (budget)"
        if self.judged:
            left = max(self.total - self.judged, 0) * elapsed / self.judged
            return f"{text}, ETA {fmt.seconds(left)} at most"
        return f"{text}, ETA after the first verdict"


class LiveTable:
    """A rich live table on stderr, updated as each result arrives; each verdict is also printed as
    a line above it, and a progress line (elapsed, count, ETA) sits under it."""

    def __init__(self, problem_ids: list[str], console: Console, title: str,
                 resumed_from: str | Path | None = None, total: int | None = None) -> None:
        self.rows = ProblemRows(problem_ids)
        if resumed_from is not None:
            self.rows.seed(resumed_from)
        self.console = console
        self.title = title
        self.progress = Progress(total)
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=4, transient=False)

    def _render(self) -> Any:
        return Group(self.rows.table(self.title), Text(self.progress.line(), style="dim"))

    def progress_line(self) -> str:
        return self.progress.line()

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.refresh()
        self.live.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        self.rows.update(event)
        self.progress.update(event)
        line = verdict_line(event)
        if line is not None:
            self.live.console.print(line, markup=False, highlight=False)
        if event["event"] in ("result", "retime"):
            self.live.refresh()


class PlainLines:
    """One line per event that matters on stderr when not on a terminal (no spinners, no redraws)."""

    def __init__(self, console: Console, problem_ids: list[str], title: str,
                 resumed_from: str | Path | None = None, total: int | None = None) -> None:
        self.console = console
        self.rows = ProblemRows(problem_ids)
        if resumed_from is not None:
            self.rows.seed(resumed_from)
        self.title = title
        self.progress = Progress(total)

    def __call__(self, event: dict[str, Any]) -> None:
        self.rows.update(event)
        self.progress.update(event)
        if event["event"] == "summary":
            self.console.print(self.rows.table(self.title))
            return
        line = verdict_line(event)
        if line is not None:
            if event["event"] == "result":
                line += f"  ({self.progress.line()})"
            self.console.print(line, markup=False, highlight=False)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    fp = summary.get("fast_p", {})
    gm = summary.get("geomean_speedup")
    console.print(f"[bold]Summary[/]: {summary['correct']} correct of {summary['candidates']} candidates; "
                  f"{summary['problems_solved']}/{summary['problems']} problems solved "
                  f"(shape: {summary.get('shape')}, device: {summary.get('device')})")
    console.print("  fast_p: " + "  ".join(f"p={k}: {fmt.fraction(v)}" for k, v in fp.items()))
    console.print(f"  geomean speedup (best correct per problem): {fmt.speedup(gm)}")
    retimed = {p: b for p, b in (summary.get("best") or {}).items() if "retimed" in b}
    if retimed:
        parts = []
        for pid, b in retimed.items():
            if not b.get("retimed"):
                word = "not re-timed (the machine failed)"
            elif b.get("status") == "correct":
                word = f"{fmt.speedup(b.get('speedup'))} (first {fmt.speedup(b.get('first_speedup'))}, {b.get('verdict')})"
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
