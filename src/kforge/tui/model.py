"""View models for the dashboard, read from a run's store. No Textual here.

- :class:`RunPoller` reads what is new in a store since the last read (events by ``seq``, the
  metadata of the candidates they name, usage, status). It runs in a worker thread, read-only.
- :class:`RunState` folds those batches into the rows the screens show, one event at a time, and
  says what changed, so the widgets update only the cells that did.
- :func:`candidate_detail` reads one candidate (code, parent, diff, evaluation) on demand.
- :func:`list_runs` and :func:`list_recipes` feed the start screen.
"""

from __future__ import annotations

import difflib
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text

from kforge import fmt
from kforge.metrics import ProblemSummary, event_record, retime_record, run_figures_of
from kforge.store import CandidateInfo, ProblemRow, RunReader, is_run_dir

STATUS_STYLE = {"correct": "green", "incorrect": "red", "compile_error": "yellow", "runtime_error": "magenta",
                "timeout": "magenta", "rejected": "bold red", "infra_error": "white on red", "judging": "cyan",
                "running": "cyan", "solved": "green", "unsolved": "red", "waiting": "dim", "finished": "green",
                "interrupted": "yellow", "failed": "bold red", "starting": "cyan"}
LOG_STYLE = {"start": "bold", "result": "", "best": "green", "budget": "yellow", "error": "bold red",
             "summary": "bold green", "finish": "bold", "duplicate": "dim", "retime": "cyan"}
MAX_BATCH_EVENTS = 5000


def styled(text: str, key: str | None = None) -> Text:
    return Text(text, style=STATUS_STYLE.get(key if key is not None else text, ""))


# -- reading ----------------------------------------------------------------------------------------
@dataclass
class Batch:
    """What one poll of the store read."""

    events: list[dict[str, Any]]
    candidates: dict[str, CandidateInfo]  # metadata of the candidates the events name
    problems: list[ProblemRow]
    usage: dict[str, Any]
    meta: dict[str, Any]  # status, elapsed_s, recipe (first read), summary
    last_seq: int
    read_at: float = 0.0  # time.monotonic() when read (the benchmark measures lag with it)


class RunPoller:
    """Reads a store incrementally. Owns its own read-only connection (one per thread)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.store = RunReader(run_dir)
        self.seq = 0
        self._first = True

    def read(self, limit: int = MAX_BATCH_EVENTS) -> Batch | None:
        """New events since the last read (at most ``limit``), or None if nothing changed."""
        events = self.store.events(self.seq, limit)
        if not events and not self._first:
            return None
        if events:
            self.seq = events[-1]["seq"]
        ids = sorted({e["candidate"] for e in events if e.get("event") == "candidate" and e.get("candidate")})
        keys = ("status", "elapsed_s", "summary", "name") + (("recipe", "started") if self._first else ())
        meta = self.store.metas(keys)
        self._first = False
        return Batch(events=events, candidates=self.store.candidate_infos(ids), problems=self.store.problems(),
                     usage=dict(self.store.usage()), meta=meta, last_seq=self.seq, read_at=time.monotonic())

    def close(self) -> None:
        self.store.close()


def _island(meta: dict[str, Any], params: dict[str, Any]) -> str | None:
    for data in (params, meta):
        if data.get("island") is not None:
            return str(data["island"])
    return None


# -- state ------------------------------------------------------------------------------------------
@dataclass
class CandidateRow:
    id: str
    problem_id: str
    order: int
    label: str | None = None
    generator: str | None = None
    model: str | None = None
    parent_id: str | None = None
    island: str | None = None
    generation: str | None = None  # evolution: the island's generation it was proposed in
    status: str | None = None  # None: being judged
    speedup: float | None = None
    guard: str | None = None


@dataclass
class LogLine:
    t: float | None  # seconds since the run started
    kind: str
    text: str

    def render(self) -> Text:
        stamp = f"{fmt.seconds(self.t):>7} " if self.t is not None else " " * 8
        line = Text(stamp, style="dim")
        line.append(self.text, style=LOG_STYLE.get(self.kind, ""))
        return line


@dataclass
class Changes:
    problems: set[str] = field(default_factory=set)
    new_problems: list[str] = field(default_factory=list)
    candidates: set[str] = field(default_factory=set)
    new_candidates: list[str] = field(default_factory=list)
    log: list[LogLine] = field(default_factory=list)
    run: bool = False  # status, usage, budget or summary changed
    events: int = 0

    def merge(self, other: Changes) -> None:
        self.problems |= other.problems
        self.new_problems += [p for p in other.new_problems if p not in self.new_problems]
        self.candidates |= other.candidates
        self.new_candidates += other.new_candidates
        self.log += other.log
        self.run = self.run or other.run
        self.events += other.events


PROBLEM_COLUMNS = (("problem", "problem", 18), ("eager", "vs eager", 8), ("compile", "vs compile", 10),
                   ("roofline", "roofline", 8), ("tried", "tried/ok", 8), ("first", "1st ok", 7),
                   ("status", "status", 10))
CANDIDATE_COLUMNS = (("id", "candidate", 9), ("status", "status", 13), ("speedup", "speedup", 8),
                     ("parent", "parent", 8), ("generator", "generator", 14), ("island", "island", 6),
                     ("label", "label", 24))


class RunState:
    """Everything the run screen shows, folded from the store's events."""

    def __init__(self, run_dir: str | Path | None = None, log_lines: int = 2000) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.name = self.run_dir.name if self.run_dir is not None else ""
        self.status = "starting"
        self.started: float | None = None
        self.last_ts: float | None = None
        self.problems: dict[str, ProblemSummary] = {}
        self.candidates: dict[str, CandidateRow] = {}
        self.by_problem: dict[str, list[str]] = {}
        self.log: deque[LogLine] = deque(maxlen=log_lines)
        self.usage: dict[str, Any] = {"tokens": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
        self.budget: dict[str, Any] = {}
        self.elapsed_s: float | None = None
        self.summary: dict[str, Any] | None = None
        self.search_metrics: dict[str, Any] = {}  # the last ``search`` event's figures
        self.device: str | None = None
        self.cpu = False
        self.n_candidates = 0
        self.n_results = 0
        self.n_correct = 0
        self.last_seq = 0

    # -- folding --------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> Changes:
        ch = Changes(events=len(batch.events))
        meta = batch.meta
        if meta.get("recipe"):
            self.budget = {k: v for k, v in (meta["recipe"].get("budget") or {}).items() if v is not None}
            ch.run = True
        if meta.get("name"):
            self.name = str(meta["name"])
        if self.started is None and meta.get("started") is not None:
            self.started = float(meta["started"])
        for p in batch.problems:
            st = self._problem(p["id"], ch)
            if p["name"] and st.name != p["name"]:
                st.name = p["name"]
        for e in batch.events:
            self._event(e, batch.candidates, ch)
        if meta.get("status") and meta["status"] != self.status and self.status not in ("finished", "interrupted"):
            self.status = str(meta["status"])
            ch.run = True
            ch.problems |= set(self.problems)  # problem statuses read the run's
        if meta.get("elapsed_s") is not None:
            self.elapsed_s = float(meta["elapsed_s"])
        if meta.get("summary") and self.summary is None:
            self.summary = meta["summary"]
            ch.run = True
        if batch.usage != self.usage:
            self.usage = batch.usage
            ch.run = True
        self.last_seq = max(self.last_seq, batch.last_seq)
        return ch

    def _problem(self, pid: str, ch: Changes) -> ProblemSummary:
        st = self.problems.get(pid)
        if st is None:
            st = self.problems[pid] = ProblemSummary(pid)
            self.by_problem.setdefault(pid, [])
            ch.new_problems.append(pid)
        return st

    def _t(self, e: dict[str, Any]) -> float | None:
        ts = e.get("ts")
        if ts is None or self.started is None:
            return None
        return max(float(ts) - self.started, 0.0)

    def _event(self, e: dict[str, Any], cmeta: dict[str, CandidateInfo], ch: Changes) -> None:
        kind = e.get("event")
        if e.get("ts") is not None:
            self.last_ts = float(e["ts"])
        if kind == "run_started":
            if self.started is None or not e.get("resumed"):
                self.started = float(e["ts"]) if self.started is None else self.started
            for pid in e.get("problems") or []:
                self._problem(pid, ch)
            self.status = "running"
            ch.run = True
            ch.log.append(self._log(e, "start", f"{'resumed' if e.get('resumed') else 'started'} "
                                                f"{e.get('name')}: {len(e.get('problems') or [])} problems"))
        elif kind == "candidate":
            cid = e["candidate"]
            if e.get("duplicate"):
                ch.log.append(self._log(e, "duplicate", f"{e.get('problem')} {e.get('proposal')}: duplicate of {cid}"))
                return
            if cid in self.candidates:
                return
            m: CandidateInfo | dict[str, Any] = cmeta.get(cid, {})
            pid = e["problem"]
            st = self._problem(pid, ch)
            row = CandidateRow(id=cid, problem_id=pid, order=len(self.candidates), label=m.get("label", e.get("label")),
                               generator=m.get("generator", e.get("generator")), model=m.get("model"),
                               parent_id=m.get("parent_id"), island=m.get("island"),
                               generation=m.get("generation"))
            self.candidates[cid] = row
            self.by_problem.setdefault(pid, []).append(cid)
            self.n_candidates += 1
            st.in_flight += 1
            ch.new_candidates.append(cid)
            ch.problems.add(pid)
            ch.run = True
        elif kind == "result":
            cid, pid = e["candidate"], e["problem"]
            st = self._problem(pid, ch)
            known = self.candidates.get(cid)
            if known is None:  # a result whose candidate event came before this store was read
                row = self.candidates[cid] = CandidateRow(id=cid, problem_id=pid, order=len(self.candidates),
                                                          label=e.get("label"))
                self.by_problem.setdefault(pid, []).append(cid)
                ch.new_candidates.append(cid)
            else:
                row = known
                if row.status is None:
                    st.in_flight = max(st.in_flight - 1, 0)
            row.status, row.speedup, row.guard = e["status"], e.get("speedup"), e.get("guard")
            st.add_result(**event_record(e), t=self._t(e))
            self.n_results += 1
            self.n_correct += e["status"] == "correct"
            self.device = e.get("device") or self.device
            self.cpu = self.cpu or e.get("device_kind") == "cpu"
            ch.candidates.add(cid)
            ch.problems.add(pid)
            ch.run = True
            if e["status"] == "correct":
                text = f"{pid} {cid} ({e.get('label')}): correct {fmt.speedup(e.get('speedup'))}"
            else:
                why = str(e.get("error") or "").splitlines()[0][:120] if e.get("error") else ""
                text = f"{pid} {cid} ({e.get('label')}): {e['status']} [{e.get('guard')}] {why}".rstrip()
            ch.log.append(self._log(e, "result", text))
        elif kind == "retime":
            cid, pid = e["candidate"], e["problem"]
            st = self._problem(pid, ch)
            st.add_retime(retime_record(e))
            ch.problems.add(pid)
            ch.run = True
            got = fmt.speedup(e.get("speedup")) if e.get("status") == "correct" else str(e.get("status"))
            ch.log.append(self._log(e, "retime", f"{pid} {cid} re-timed: {got} (first {fmt.speedup(e.get('first_speedup'))})"
                                                 f": {e.get('verdict')}"))
        elif kind == "search":
            self.search_metrics = dict(e.get("metrics") or {})
        elif kind == "best_improved":
            ch.log.append(self._log(e, "best", f"{e.get('problem')}: new best {e.get('candidate')} "
                                               f"{fmt.speedup(e.get('speedup'))}"))
        elif kind in ("budget", "error"):
            msg = e.get("message") or e.get("reason") or kind
            ch.log.append(self._log(e, kind, f"{e.get('candidate', '')} {msg}".strip()))
            ch.run = True
        elif kind == "summary":
            self.summary = {k: v for k, v in e.items() if k not in ("event", "ts", "seq")}
            ch.run = True
            ch.log.append(self._log(e, "summary", f"summary: {e.get('correct')} correct of {e.get('candidates')}; "
                                                  f"{e.get('problems_solved')}/{e.get('problems')} solved; geomean "
                                                  f"{fmt.speedup(e.get('geomean_speedup'))}"))
        elif kind == "run_finished":
            self.status = str(e.get("status") or "finished")
            ch.run = True
            ch.problems |= set(self.problems)
            ch.log.append(self._log(e, "finish", f"run {self.status}"))

    def _log(self, e: dict[str, Any], kind: str, text: str) -> LogLine:
        line = LogLine(self._t(e), kind, text)
        self.log.append(line)
        return line

    # -- rows -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ("finished", "interrupted", "failed")

    def problem_status(self, st: ProblemSummary) -> Text:
        if st.in_flight and not self.finished:  # submitted, not judged yet: some may wait for a free judge
            return styled(f"{st.in_flight} in flight", "judging")
        if st.solved:
            return styled("solved")
        if st.tried:
            return styled("unsolved")
        return styled("not tried" if self.finished else "waiting", "waiting")

    def problem_cells(self, pid: str) -> dict[str, Any]:
        st = self.problems[pid]
        return {"problem": pid, "eager": fmt.speedup(st.best_speedup), "compile": fmt.speedup(st.best_vs_compile),
                "roofline": fmt.pct(st.best_roofline), "tried": f"{st.tried}/{st.correct}",
                "first": fmt.seconds(st.first_correct_s), "status": self.problem_status(st)}

    def best_info(self, pid: str) -> str:
        """One line on the problem's best: speedup and candidate, where evolution bred it, its re-timing."""
        st = self.problems[pid]
        if st.best_speedup is None:
            if st.retime and st.retime.get("retimed"):
                return f"no correct candidate: {st.retime.get('candidate')} was {st.retime.get('verdict')} when re-timed"
            return "no correct candidate yet"
        text = f"best {fmt.speedup(st.best_speedup)} by {st.best_candidate}"
        row = self.candidates.get(st.best_candidate or "")
        if row is not None and row.island is not None and row.generation is not None:
            text += f" (island {row.island}, generation {row.generation})"
        if st.retime and st.retime.get("retimed"):
            text += f"; re-timed, first {fmt.speedup(st.retime.get('first_speedup'))}"
            if st.retime.get("verdict") != "accepted":
                text += f" ({st.retime.get('verdict')})"
        return text

    def candidate_cells(self, cid: str) -> dict[str, Any]:
        row = self.candidates[cid]
        status = styled(row.status, row.status) if row.status else styled("judging")
        gen = row.generator or "-"
        if row.model:
            gen = f"{gen}/{row.model}"
        return {"id": cid, "status": status, "speedup": fmt.speedup(row.speedup), "parent": row.parent_id or "-",
                "generator": gen, "island": row.island or "-", "label": row.label or "-"}

    def candidate_ids(self, pid: str, by_speedup: bool = False) -> list[str]:
        ids = list(self.by_problem.get(pid, []))
        if by_speedup:
            ids.sort(key=lambda c: (-(self.candidates[c].speedup or -1.0), self.candidates[c].order))
        return ids

    def sparkline(self, pid: str) -> list[float]:
        st = self.problems.get(pid)
        if st is None or not st.history:
            return []  # nothing yet: an empty sparkline (one value would draw as full bars)
        return [0.0] + list(st.history)

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds the run has taken: the store's figure once finished, else from its start to ``now``."""
        if self.finished or now is None or self.started is None:
            return self.elapsed_s if self.elapsed_s is not None else (
                self.last_ts - self.started if self.last_ts is not None and self.started is not None else None)
        return max(now - self.started, 0.0)

    def budget_rows(self, now: float | None = None) -> list[tuple[str, str, str, str, float | None]]:
        """(budget, used, limit, left, fraction used) for each budget the recipe sets."""
        used_by = {"candidates": self.n_candidates, "wall_clock_s": self.elapsed(now),
                   "tokens": self.usage.get("tokens"), "usd": self.usage.get("cost_usd")}
        rows: list[tuple[str, str, str, str, float | None]] = []
        for key, limit in self.budget.items():
            used = used_by.get(key)
            if used is None:
                rows.append((key, "-", _num(key, limit), "-", None))
                continue
            left = max(float(limit) - float(used), 0.0)
            rows.append((key, _num(key, used), _num(key, limit), _num(key, left),
                         min(float(used) / float(limit), 1.0) if limit else None))
        return rows

    def headline(self) -> list[tuple[str, str]]:
        run = run_figures_of(self.problems)  # the run's figures, by the summary's own rules
        rows = [("status", self.status), ("problems solved", f"{run['problems_solved']}/{run['problems']}"),
                ("results", f"{run['candidates']} ({run['correct']} correct)"),
                ("geomean best", fmt.speedup(run["geomean_speedup"]))]
        if self.summary and self.summary.get("fast_p"):
            rows.append(("fast_1", fmt.fraction(self.summary["fast_p"].get("1", 0.0))))
        rows.append(("tokens / cost", f"{self.usage.get('tokens', 0):,} / ${self.usage.get('cost_usd', 0.0):.2f}"))
        if self.device:
            rows.append(("device", self.device + (" (CPU timings)" if self.cpu else "")))
        return rows


def _num(key: str, x: Any) -> str:
    if key == "wall_clock_s":
        return fmt.seconds(float(x))
    if key == "usd":
        return f"${float(x):.2f}"
    if isinstance(x, float) and x.is_integer():
        return f"{int(x):,}"
    return f"{x:,}" if isinstance(x, int) else f"{x:.4g}"


# -- one candidate ------------------------------------------------------------------------------------
@dataclass
class CandidateDetail:
    id: str
    problem_id: str
    label: str | None
    generator: str | None
    model: str | None
    parent_id: str | None
    island: str | None
    code: str
    status: str | None
    speedup: float | None
    result: dict[str, Any] | None
    base_id: str | None  # what the diff compares against
    diff: str
    diff_note: str
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def timing_samples(self) -> list[float]:
        return list(((self.result or {}).get("timing") or {}).get("samples_ms") or [])

    @property
    def baseline_samples(self) -> list[float]:
        return list(((self.result or {}).get("baseline_eager") or {}).get("samples_ms") or [])

    def samples_caption(self, which: str) -> str:
        stats = ((self.result or {}).get("timing" if which == "candidate" else "baseline_eager") or {})
        samples = stats.get("samples_ms") or []
        if not samples:
            return f"{which}: no timing samples"
        return (f"{which} samples in order: median {fmt.number(stats.get('median_ms'))} ms, "
                f"{fmt.number(min(samples))} to {fmt.number(max(samples))} ms, n={len(samples)}")

    def title(self) -> str:
        parts = [f"{self.id} · {self.problem_id}"]
        if self.label:
            parts.append(self.label)
        parts.append(self.status or "judging")
        if self.speedup is not None:
            parts.append(fmt.speedup(self.speedup))
        return " · ".join(parts)

    def evaluation(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The evaluation in sections of (field, value), as the screen shows it."""
        r = self.result
        head = [("candidate", self.id), ("problem", self.problem_id), ("label", self.label or "-"),
                ("generator", "/".join(x for x in (self.generator, self.model) if x) or "-"),
                ("parent", self.parent_id or "-"), ("island", self.island or "-"),
                ("tokens / cost", f"{self.tokens:,} / ${self.cost_usd:.4f}")]
        if r is None:
            return [("Candidate", head), ("Verdict", [("status", "being judged (no result yet)")])]
        verdict = [("status", str(r.get("status"))), ("guard", str(r.get("guard") or "-"))]
        if r.get("error"):
            verdict.append(("error", str(r["error"])))
        if r.get("mismatch"):
            verdict.append(("mismatch", str(r["mismatch"])))
        correctness = [("trials", f"{r.get('trials_passed', 0)} of {r.get('trials_run', 0)} passed"),
                       ("max abs error", fmt.number(r.get("max_abs_err"))), ("max rel error", fmt.number(r.get("max_rel_err")))]
        if r.get("distributions"):
            correctness.append(("inputs", ", ".join(map(str, r["distributions"]))))
        sections = [("Candidate", head), ("Verdict", verdict), ("Correctness", correctness)]
        timing = r.get("timing") or {}
        if timing:
            med = timing.get("median_ms") or 0.0
            spread = (timing.get("p80_ms", 0) - timing.get("p20_ms", 0)) / med if med else None
            base = r.get("baseline_eager") or {}
            rows = [("candidate median", f"{fmt.number(med)} ms (n={timing.get('n')})"),
                    ("p20 / p80", f"{fmt.number(timing.get('p20_ms'))} / {fmt.number(timing.get('p80_ms'))} ms"),
                    ("spread (p80-p20)/median", fmt.pct(spread, small=True)),
                    ("cv", fmt.pct(timing.get("cv"), small=True)),
                    ("rel. std. error", fmt.pct(timing.get("rel_se"), small=True))]
            if base:
                rows.append(("eager median", f"{fmt.number(base.get('median_ms'))} ms (n={base.get('n')}, "
                                             f"cv {fmt.pct(base.get('cv'), small=True)})"))
            rows += [("speedup vs eager", fmt.speedup(r.get("speedup_vs_eager"))),
                     ("speedup vs compile", fmt.speedup(r.get("speedup_vs_compile"))),
                     ("roofline", fmt.pct(r.get("roofline_fraction"))), ("A/A ratio", fmt.number(r.get("aa_ratio"))),
                     ("method", str(r.get("timing_method") or "-"))]
            sections.append(("Timing", rows))
        device = [("device", str(r.get("device") or "-")), ("kind", str(r.get("device_kind") or "-")),
                  ("shape", str(r.get("shape_name") or "-"))]
        versions = r.get("versions") or {}
        for key in ("torch", "triton", "cuda", "driver"):
            if versions.get(key):
                device.append((key, str(versions[key])))
        if r.get("flags"):
            device.append(("flags", ", ".join(map(str, r["flags"]))))
        durations = r.get("durations_s") or {}
        if durations:
            device.append(("durations", ", ".join(f"{k} {v:.2f}s" for k, v in durations.items()
                                                  if isinstance(v, (int, float)))))
        sections.append(("Device", device))
        if r.get("log_tail"):
            sections.append(("Output (tail)", [("", str(r["log_tail"]))]))
        return sections


def candidate_detail(store: RunReader, cid: str) -> CandidateDetail:
    c = store.candidate_view(cid)
    if c is None:
        raise KeyError(f"no candidate {cid!r} in {store.run_dir}")
    params = c["params"]
    base_id, base_code, note = None, None, ""
    if c["parent_id"]:
        parent = store.candidate(c["parent_id"])
        if parent is not None:
            base_id, base_code, note = c["parent_id"], parent["code"], f"diff against its parent {c['parent_id']}"
        elif params.get("parent_code"):
            base_id, base_code, note = c["parent_id"], str(params["parent_code"]), \
                f"diff against its parent {c['parent_id']} (code from the proposal)"
    if base_code is None:
        best = store.best_correct(c["problem_id"], exclude=cid)
        if best is not None:
            base_id, base_code = best
            note = f"no parent recorded: diff against the problem's best correct candidate {best[0]}"
        else:
            note = "no parent recorded and no other correct candidate to compare with"
    diff = ""
    if base_code is not None:
        diff = "".join(difflib.unified_diff(base_code.splitlines(keepends=True), c["code"].splitlines(keepends=True),
                                            fromfile=f"{base_id}.py", tofile=f"{cid}.py"))
        if not diff:
            note += " (identical)"
    return CandidateDetail(
        id=cid, problem_id=c["problem_id"], label=c["label"], generator=c["generator"], model=c["model"],
        parent_id=c["parent_id"], island=_island(c["meta"], params), code=c["code"], status=c["status"],
        speedup=c["speedup"], result=c["result"], base_id=base_id, diff=diff, diff_note=note,
        tokens=c["tokens_in"] + c["tokens_out"], cost_usd=c["cost_usd"])


# -- the start screen -----------------------------------------------------------------------------------
@dataclass
class RunInfo:
    path: Path
    name: str
    status: str
    started: float | None
    problems: int
    results: int
    correct: int

    def started_text(self) -> str:
        if self.started is None:
            return "-"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))


@dataclass
class RecipeInfo:
    path: Path
    name: str
    description: str


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Run directories directly under ``runs_dir``, newest first (unreadable ones are skipped)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if not is_run_dir(path):
            continue
        try:
            with RunReader(path) as store:
                metas = store.metas()
                counts = store.counts()
        except Exception:  # noqa: BLE001 - a half-written or foreign database is just not listed
            continue
        out.append(RunInfo(path=path, name=str(metas.get("name") or path.name), status=str(metas.get("status") or "?"),
                           started=metas.get("started"), problems=counts["problems"], results=counts["results"],
                           correct=counts["correct"]))
    out.sort(key=lambda r: (r.started or 0.0, str(r.path)), reverse=True)
    return out


def list_recipes(recipes_dir: str | Path) -> list[RecipeInfo]:
    """``*.toml`` recipes in ``recipes_dir``, each with the first line of its leading comment."""
    root = Path(recipes_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*.toml")):
        desc = ""
        try:
            for line in path.read_text().splitlines():
                if line.startswith("#"):
                    desc = line.lstrip("# ").strip()
                    if desc:
                        break
                elif line.strip():
                    break
        except OSError:
            continue
        out.append(RecipeInfo(path=path, name=path.stem, description=desc))
    return out


def classify_target(target: str | Path | None) -> str:
    """'home' (nothing given), 'run' (a run directory) or 'recipe' (a file); raises ValueError otherwise."""
    if target is None:
        return "home"
    path = Path(target)
    if path.is_dir():
        if is_run_dir(path):
            return "run"
        raise ValueError(f"{path} is not a kforge run directory (no kforge.db)")
    if path.is_file():
        if path.suffix.lower() != ".toml":
            raise ValueError(f"{path} is not a recipe (a .toml file) nor a run directory")
        return "recipe"
    raise ValueError(f"{path} does not exist: give a run directory or a recipe file")
