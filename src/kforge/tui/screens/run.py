"""The run screen: the live speedup table, the selected problem's candidates and best-so-far
sparkline, the run's figures and budgets, and the event log."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Label, Sparkline
from textual.worker import get_current_worker

from kforge.store import is_run_dir
from kforge.tui.launch import LaunchedRun, LaunchError
from kforge.tui.messages import LaunchFailed, RunDirKnown, StoreChanged
from kforge.tui.model import Batch, Changes, LogLine, RunPoller, RunState
from kforge.tui.screens.base import KforgeScreen
from kforge.tui.widgets import BudgetPanel, CandidateTable, EventLog, KeyValuePanel, ProblemTable

HELP = """
# Run

The table at the top has one row per problem: the best speedup of a correct candidate against
PyTorch eager and against torch.compile, the best candidate's roofline fraction, candidates
judged / correct, the time to the first correct one, and the problem's status. Rows update in place
as results arrive.

| key | does |
| --- | --- |
| `enter` (problems) | go to the selected problem's candidates |
| `enter` / `o` (candidates) | open the candidate: code, diff against its parent, evaluation |
| `b` | open the selected problem's best candidate |
| `s` | sort candidates by speedup / by arrival |
| `p` / `c` / `e` | focus problems / candidates / event log |
| `l` | show or hide the event log |
| `R` | write the report (report.md, report.html) into the run directory |
| `x` | stop the run started from here (a clean stop: it finishes what is in flight) |
| `escape` | back to the list of runs |
"""


class RunScreen(KforgeScreen):
    HELP = HELP
    BINDINGS = [
        Binding("o", "open_candidate", "Open"),
        Binding("b", "open_best", "Best"),
        Binding("s", "toggle_sort", "Sort"),
        Binding("p", "focus_pane('problems')", "Problems", show=False),
        Binding("c", "focus_pane('candidates')", "Candidates", show=False),
        Binding("e", "focus_pane('log')", "Log", show=False),
        Binding("l", "toggle_log", "Log"),
        Binding("R", "report", "Report"),
        Binding("x", "stop_run", "Stop run"),
        Binding("escape", "back", "Runs"),
    ]

    def __init__(self, run_dir: Path | None = None, launch: LaunchedRun | None = None,
                 poll_interval: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.launch = launch
        self.poll_interval = poll_interval
        self.state = RunState(run_dir)
        self.selected: str | None = None
        self.by_speedup = False
        self._pending: deque[Batch] = deque()
        self.launch_error: str | None = None

    # -- layout -------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with Horizontal(id="top"):
            yield ProblemTable(id="problems")
            with Vertical(id="side"):
                yield KeyValuePanel(id="headline")
                yield BudgetPanel(id="budget")
        with Horizontal(id="middle"):
            yield CandidateTable(id="candidates")
            with Vertical(id="best-box"):
                yield Label("best speedup so far", id="spark-title")
                yield Sparkline([], id="spark")
                yield Label("", id="best-info")
        yield EventLog(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#problems").border_title = "Problems"
        self.query_one("#side").border_title = "Run"
        self.query_one("#candidates").border_title = "Candidates"
        self.query_one("#best-box").border_title = "Best so far"
        self.query_one("#log").border_title = "Events"
        self._set_titles()
        self.query_one(KeyValuePanel).show(self.state.headline())
        self.query_one(BudgetPanel).show([])
        if self.launch is not None:
            self.query_one(EventLog).add([LogLine(None, "start", f"launching kforge run {self.launch.recipe} "
                                                              f"(pid {self.launch.pid})")])
        self.set_interval(1.0, self._tick)
        self.watch_store()

    def _set_titles(self) -> None:
        if self.launch_error is not None:
            return  # _launch_failed said it did not start
        self.app.refresh_bindings()  # "Stop run" only while a run started here goes on
        if self.run_dir is None:
            self.title = f"kforge · starting {self.launch.recipe if self.launch else ''}"
            self.sub_title = "waiting for the run to start"
            return
        self.title = f"kforge · {self.state.name or self.run_dir.name}"
        self.sub_title = f"{self.state.status} · {self.run_dir.name}"

    # -- reading the store (worker thread) ------------------------------------------------------------
    @work(thread=True, exclusive=True, group="store", exit_on_error=False, description="watching the run's store")
    def watch_store(self) -> None:
        worker = get_current_worker()
        run_dir = self.run_dir
        if run_dir is None and self.launch is not None:
            try:
                run_dir = self.launch.wait_for_run_dir(cancelled=lambda: worker.is_cancelled)
            except LaunchError as exc:
                self.post_message(LaunchFailed(str(exc)))
                return
            if run_dir is None:
                return
            self.post_message(RunDirKnown(run_dir))
        assert run_dir is not None
        while not is_run_dir(run_dir):
            if worker.cancelled_event.wait(self.poll_interval):
                return
        poller = RunPoller(run_dir)
        try:
            while not worker.is_cancelled:
                fresh = False
                while not worker.is_cancelled:
                    batch = poller.read()
                    if batch is None:
                        break
                    self._pending.append(batch)
                    fresh = True
                    if len(batch.events) < 5000:
                        break
                if fresh:
                    self.post_message(StoreChanged())
                worker.cancelled_event.wait(self.poll_interval)
        finally:
            poller.close()

    @on(RunDirKnown)
    def _run_dir_known(self, message: RunDirKnown) -> None:
        self.run_dir = message.run_dir
        self.state.run_dir = message.run_dir
        self._set_titles()

    @on(LaunchFailed)
    def _launch_failed(self, message: LaunchFailed) -> None:
        self.state.status = "failed"
        self.launch_error = message.error
        self.title = f"kforge · {self.launch.recipe if self.launch else 'the run'} did not start"
        self.sub_title = "the run did not start: see the events below"
        self.app.refresh_bindings()
        self.query_one(EventLog).add([LogLine(None, "error", line) for line in message.error.splitlines()])
        self.app.notify(message.error.splitlines()[0], severity="error", timeout=15)

    @on(StoreChanged)
    def _store_changed(self, _message: StoreChanged) -> None:
        changes = Changes()
        while self._pending:
            batch = self._pending.popleft()
            changes.merge(self.state.apply(batch))
        self.show_changes(changes)

    # -- showing ------------------------------------------------------------------------------------
    def show_changes(self, ch: Changes) -> None:
        state = self.state
        with self.app.batch_update():
            table = self.query_one(ProblemTable)
            order = ch.new_problems + sorted(ch.problems - set(ch.new_problems))
            table.upsert((pid, state.problem_cells(pid)) for pid in order if pid in state.problems)
            if self.selected is None and state.problems:
                self.select_problem(next(iter(state.problems)))
            elif self.selected is not None:
                shown = [c for c in dict.fromkeys(ch.new_candidates + sorted(ch.candidates))
                         if c in state.candidates and state.candidates[c].problem_id == self.selected]
                if shown:
                    cands = self.query_one(CandidateTable)
                    cands.upsert((cid, state.candidate_cells(cid)) for cid in shown)
                    self._sort_candidates()
                    self._count_candidates()
                if self.selected in ch.problems:
                    self._show_best()
            if ch.run or ch.events:
                self._show_panels()
            if ch.log:
                self.query_one(EventLog).add(ch.log)
            self._set_titles()

    def _show_panels(self) -> None:
        self.query_one(KeyValuePanel).show(self.state.headline())
        now = None if self.state.finished else time.time()
        self.query_one(BudgetPanel).show(self.state.budget_rows(now))

    def _tick(self) -> None:
        if self.state.status == "running" and self.state.budget.get("wall_clock_s") is not None:
            self.query_one(BudgetPanel).show(self.state.budget_rows(time.time()))

    def select_problem(self, pid: str) -> None:
        if pid == self.selected:
            return
        self.selected = pid
        cands = self.query_one(CandidateTable)
        with self.app.batch_update():
            cands.reset()
            cands.upsert((cid, self.state.candidate_cells(cid)) for cid in self.state.candidate_ids(pid))
            self._sort_candidates()
            self._count_candidates()
            self._show_best()

    def _count_candidates(self) -> None:
        n = len(self.state.by_problem.get(self.selected or "", []))
        self.query_one(CandidateTable).border_title = f"Candidates of {self.selected} ({n})"

    def _sort_candidates(self) -> None:
        if not self.by_speedup or self.selected is None:
            return
        order = {cid: i for i, cid in enumerate(self.state.candidate_ids(self.selected, by_speedup=True))}
        self.query_one(CandidateTable).sort("id", key=lambda cid: order.get(str(cid), len(order)))

    def _show_best(self) -> None:
        pid = self.selected
        if pid is None:
            return
        st = self.state.problems[pid]
        self.query_one("#spark", Sparkline).data = self.state.sparkline(pid)
        self.query_one("#spark-title", Label).update(Text(f"{pid}: best after each of {st.tried} results"))
        self.query_one("#best-info", Label).update(Text(self.state.best_info(pid)))

    # -- events from widgets ------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#problems")
    def _problem_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.select_problem(str(event.row_key.value))

    @on(DataTable.RowSelected, "#problems")
    def _problem_selected(self, event: DataTable.RowSelected) -> None:
        self.query_one(CandidateTable).focus()

    @on(DataTable.RowSelected, "#candidates")
    def _candidate_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.open_candidate(str(event.row_key.value))

    # -- actions ------------------------------------------------------------------------------------
    def open_candidate(self, cid: str) -> None:
        if self.run_dir is None:
            return
        from kforge.tui.screens.candidate import CandidateScreen

        self.app.push_screen(CandidateScreen(self.run_dir, cid))

    def action_open_candidate(self) -> None:
        cid = self.query_one(CandidateTable).highlighted_key
        if cid is not None:
            self.open_candidate(cid)

    def action_open_best(self) -> None:
        if self.selected is None:
            return
        best = self.state.problems[self.selected].best_candidate
        if best is None:
            self.app.notify(f"{self.selected} has no correct candidate yet", severity="warning")
            return
        self.query_one(CandidateTable).move_to(best)
        self.open_candidate(best)

    def action_toggle_sort(self) -> None:
        self.by_speedup = not self.by_speedup
        if self.by_speedup:
            self._sort_candidates()
        elif self.selected is not None:
            order = {cid: i for i, cid in enumerate(self.state.candidate_ids(self.selected))}
            self.query_one(CandidateTable).sort("id", key=lambda cid: order.get(str(cid), len(order)))
        self.app.notify(f"candidates sorted by {'speedup' if self.by_speedup else 'arrival'}", timeout=2)

    def action_focus_pane(self, which: str) -> None:
        self.query_one(f"#{which}").focus()

    def action_toggle_log(self) -> None:
        log = self.query_one(EventLog)
        log.display = not log.display

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_stop_run(self) -> None:
        if self.launch is None or not self.launch.running():
            self.app.notify("only a run started from this dashboard can be stopped here", severity="warning")
            return
        self.launch.stop()
        self.query_one(EventLog).add([LogLine(None, "budget", "asked the run to stop (a clean stop, as Ctrl-C)")])

    def action_report(self) -> None:
        if self.run_dir is None:
            return
        self.write_report(self.run_dir)

    @work(thread=True, exclusive=True, group="report", exit_on_error=False, description="writing the report")
    def write_report(self, run_dir: Path) -> None:
        from kforge.report import write_report

        paths = write_report(run_dir)
        self.app.call_from_thread(self.app.notify, f"report written: {paths['html']}", timeout=10)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_run":
            return self.launch is not None and self.launch.running() and not self.state.finished
        if action == "back":
            return len(self.app.screen_stack) > 2
        return True
