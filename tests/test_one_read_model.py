"""A run, a Ctrl-C, a resume: the final table, the summary, the report and the dashboard report the
same numbers (they all read one summary of the store).

Before, a resumed quickstart's final table counted only the results judged after the resume
("tried 4, correct 0"), while the summary and ``kforge report`` counted the whole run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kforge import fmt
from kforge.store import RunReader
from kforge.tui.model import RunPoller, RunState

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart" / "candidates"
# relu: a correct kernel and a wrong one; softmax: a correct one. Sorted by name, so the replay order is fixed.
FILES = ["relu/a_correct.py", "relu/b_wrong_slope.py", "softmax/a_correct.py"]
SOURCES = ["relu/correct.py", "relu/wrong_slope.py", "softmax/correct.py"]


def _recipe(tmp: Path) -> Path:
    for rel, src in zip(FILES, SOURCES):
        dst = tmp / "cands" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(QUICK / src, dst)
    recipe = tmp / "r.toml"
    recipe.write_text(f"""
[run]
name = "readmodel"
seed = 3
[problems]
ids = ["relu", "softmax"]
[generator]
name = "replay"
path = "{(tmp / 'cands').as_posix()}"
[search]
name = "best-of-n"
n = 2
retime_winner = false  # re-timed figures agree across views too: tests/searches/test_retime.py
[eval]
trials = 5
min_samples = 3
max_samples = 5
max_timing_s = 1
[executor]
workers = 1
""")
    return recipe


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFORGE_")}
    env.update(KFORGE_LOAD_PLUGINS="", PYTHONUNBUFFERED="1", NO_COLOR="1", COLUMNS="200",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    return env


def _table_rows(stderr: str) -> dict[str, dict[str, str]]:
    """The last table printed on stderr: {problem: {column: cell}}."""
    lines = stderr.splitlines()
    heads = [i for i, ln in enumerate(lines) if "┃" in ln and "problem" in ln]
    assert heads, stderr
    head = [c.strip() for c in lines[heads[-1]].strip("┃ ").split("┃")]
    rows: dict[str, dict[str, str]] = {}
    for ln in lines[heads[-1] + 1:]:
        if "│" not in ln:
            if rows:
                break
            continue
        cells = [c.strip() for c in ln.strip().strip("│").split("│")]
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def _summary_line(stderr: str) -> tuple[int, int, int, int, str]:
    m = re.findall(r"Summary: (\d+) correct of (\d+) candidates; (\d+)/(\d+) problems solved", stderr)
    g = re.findall(r"geomean speedup \(best correct per problem\): (\S+)", stderr)
    assert m and g, stderr
    c, n, s, p = map(int, m[-1])
    return c, n, s, p, g[-1]


@pytest.mark.slow
def test_ctrl_c_then_resume_every_view_reports_the_same_numbers(tmp_path: Path) -> None:
    recipe, run_dir = _recipe(tmp_path), tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kforge", "run", str(recipe), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=tmp_path)
    assert proc.stderr is not None
    first = []
    deadline = time.time() + 240
    for line in proc.stderr:  # plain lines (no terminal): one per result
        first.append(line)
        if re.match(r"^(relu|softmax) c\d{4} ", line):
            proc.send_signal(signal.SIGINT)  # a Ctrl-C: stop cleanly, keep what was recorded
            break
        assert time.time() < deadline
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(first) + rest

    resumed = subprocess.run([sys.executable, "-m", "kforge", "resume", str(run_dir)], capture_output=True,
                             text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    table = _table_rows(resumed.stderr)
    correct, candidates, solved, n_problems, geomean = _summary_line(resumed.stdout)  # the answer: stdout

    report = subprocess.run([sys.executable, "-m", "kforge", "report", str(run_dir), "--json"], capture_output=True,
                            text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert report.returncode == 0, report.stderr
    figures = json.loads(report.stdout)
    by_id = {p["id"]: p for p in figures["problems"]}

    poller = RunPoller(run_dir)  # the dashboard's view of the same store
    state = RunState(run_dir)
    while (batch := poller.read()) is not None:
        state.apply(batch)
    poller.close()
    headline = dict(state.headline())

    # every candidate was judged once across the two processes: 2 relu files and 1 softmax file
    assert candidates == figures["results"] == 3
    assert correct == figures["correct"] == 2
    assert solved == figures["problems_solved"] == 2 and n_problems == 2
    assert geomean == fmt.speedup(figures["geomean_speedup"]) == headline["geomean best"]
    assert headline["problems solved"] == f"{solved}/{n_problems}"
    assert headline["results"] == f"{candidates} ({correct} correct)"
    for pid in ("relu", "softmax"):
        p = by_id[pid]
        cells = state.problem_cells(pid)
        assert table[pid]["tried"] == str(p["tried"]), (pid, table[pid], p)
        assert table[pid]["correct"] == str(p["correct"]), (pid, table[pid], p)
        assert cells["tried"] == f"{p['tried']}/{p['correct']}"
        assert table[pid]["best speedup"] == fmt.speedup(p["best_speedup"]) == cells["eager"]
    assert by_id["relu"]["tried"] == 2 and by_id["relu"]["correct"] == 1
    assert by_id["softmax"]["tried"] == 1 and by_id["softmax"]["correct"] == 1
    # the resumed engine knew each problem's best from the store: one best_improved per problem, not two
    with RunReader(run_dir) as store:
        improved = [e["problem"] for e in store.events(types=("best_improved",))]
    assert sorted(improved) == ["relu", "softmax"]
