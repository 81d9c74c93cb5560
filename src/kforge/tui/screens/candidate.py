"""One candidate: its code, its diff against its parent, its evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Label, Sparkline, Static, TabbedContent, TabPane

from kforge.store import RunReader
from kforge.tui.model import CandidateDetail, candidate_detail
from kforge.tui.screens.base import KforgeScreen
from kforge.tui.widgets import EvaluationView

HELP = """
# Candidate

| key | does |
| --- | --- |
| `1` / `2` / `3` | the code / the diff against its parent / the evaluation |
| `left` / `right` (on the tab bar) | previous / next tab |
| `P` | open its parent |
| `r` | read it again from the store (a result still being judged) |
| `escape` | back to the run |

Without a recorded parent the diff compares against the problem's best correct candidate.
The evaluation shows the verdict and the check that decided it, the correctness trials, the timing
(median, p20/p80, spread, cv, the samples as sparklines) and the device it ran on.
"""


class CandidateScreen(KforgeScreen):
    HELP = HELP
    BINDINGS = [
        Binding("1", "tab('code')", "Code"),
        Binding("2", "tab('diff')", "Diff"),
        Binding("3", "tab('evaluation')", "Evaluation"),
        Binding("P", "parent", "Parent"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_dir: Path, candidate_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.candidate_id = candidate_id
        self.detail: CandidateDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        yield Label("", id="cand-title")
        with TabbedContent(initial="code", id="tabs"):
            with TabPane("Code", id="code"), VerticalScroll():
                yield Static("", id="code-view")
            with TabPane("Diff", id="diff"):
                yield Label("", id="diff-note")
                with VerticalScroll():
                    yield Static("", id="diff-view")
            with TabPane("Evaluation", id="evaluation"), VerticalScroll():
                with Horizontal(id="samples"):
                    with Vertical():
                        yield Label("", id="cand-samples-title")
                        yield Sparkline([0.0], id="cand-samples")
                    with Vertical():
                        yield Label("", id="base-samples-title")
                        yield Sparkline([0.0], id="base-samples")
                yield EvaluationView(id="evaluation-view")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        if self.detail is not None and self.detail.status is None:
            self.set_interval(1.0, self._reload_while_judging)

    def load(self) -> None:
        with RunReader(self.run_dir) as store:
            self.detail = detail = candidate_detail(store, self.candidate_id)
        self.title = f"kforge · {detail.id}"
        self.sub_title = self.run_dir.name
        self.query_one("#cand-title", Label).update(Text(detail.title()))
        self.query_one("#code-view", Static).update(
            Syntax(detail.code, "python", line_numbers=True, word_wrap=False, theme="monokai"))
        self.query_one("#diff-note", Label).update(Text(detail.diff_note))
        self.query_one("#diff-view", Static).update(
            Syntax(detail.diff, "diff", line_numbers=False, theme="monokai") if detail.diff else Text(""))
        self.query_one("#cand-samples-title", Label).update(Text(detail.samples_caption("candidate")))
        self.query_one("#base-samples-title", Label).update(Text(detail.samples_caption("eager")))
        self.query_one("#cand-samples", Sparkline).data = detail.timing_samples or [0.0]
        self.query_one("#base-samples", Sparkline).data = detail.baseline_samples or [0.0]
        self.query_one("#samples").display = bool(detail.timing_samples)
        self.query_one(EvaluationView).show(detail)

    def _reload_while_judging(self) -> None:
        if self.detail is not None and self.detail.status is None:
            self.load()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_reload(self) -> None:
        self.load()

    def action_parent(self) -> None:
        if self.detail is None or not self.detail.parent_id:
            self.app.notify("this candidate has no recorded parent", severity="warning")
            return
        self.app.push_screen(CandidateScreen(self.run_dir, self.detail.parent_id))

    def action_back(self) -> None:
        self.app.pop_screen()
