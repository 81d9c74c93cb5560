"""Every fault through the real ``kforge run``: a replay generator over ``candidates/``, the local
executor with one judge on the CPU, the SQLite store. Nothing is lost: each candidate is recorded
with its verdict, none as an infrastructure error (which is what a dead or replaced judge would
give), and the correct ones pass alongside the faults. About a minute on two cores.

Here the static checks run as in any run, so the candidates they reject (ctypes, os._exit) are
recorded with the rule they break; ``test_fault_judge.py`` takes those to the judge itself.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fault_cases import CANDIDATES, FAULTS, RELU, TEST_SANDBOX_MEMORY_MB, cpu_verdicts

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 10
COMPILE_TIMEOUT_S = 15

pytestmark = pytest.mark.slow

RECIPE = """\
[run]
name = "faults"
seed = 0
out = "{out}"

[problems]
source = "builtin"
ids = ["relu"]
shapes = "small"

[backend]
name = "triton"

[generator]
name = "replay"
path = "{candidates}"

[search]
name = "best-of-n"
n = {n}
retime_winner = false

[executor]
name = "local"
device = "cpu"
workers = 1

[eval]
trials = 5
warmup = 1
min_samples = 3
max_samples = 3
max_timing_s = 1
compile_timeout_s = {compile_timeout}
run_timeout_s = {run_timeout}

[budget]
candidates = {n}
"""


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory, base_env: dict[str, str]) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("fault-run")
    files = sorted(p.name for p in RELU.glob("*.py"))
    recipe = tmp / "faults.toml"
    recipe.write_text(RECIPE.format(out=tmp / "runs", candidates=CANDIDATES, n=len(files),
                                    compile_timeout=COMPILE_TIMEOUT_S, run_timeout=RUN_TIMEOUT_S))
    env = dict(base_env, KFORGE_SANDBOX_MEMORY_MB=str(TEST_SANDBOX_MEMORY_MB))
    proc = subprocess.run([sys.executable, "-m", "kforge", "run", str(recipe), "--json"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {"proc": proc, "events": events, "files": files}


def test_the_run_finishes(fault_run: dict[str, Any]) -> None:
    proc = fault_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = fault_run["events"][-1]
    assert (last["event"], last["status"]) == ("run_finished", "finished")


def test_every_candidate_is_in_the_store_with_its_verdict(fault_run: dict[str, Any]) -> None:
    run_dir = Path(fault_run["events"][0]["run_dir"])
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute("SELECT c.id, c.label, r.status, r.result FROM candidates c "
                          "LEFT JOIN results r ON r.candidate_id = c.id ORDER BY c.seq").fetchall()
        results_only = db.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        db.close()
    assert sorted(r["label"] for r in rows) == fault_run["files"]  # every file became a candidate
    assert results_only == len(rows) and all(r["result"] for r in rows), "a candidate has no result"
    stored = {r["label"]: json.loads(r["result"]) for r in rows}
    verdicts = {label: (res["status"], res["guard"]) for label, res in stored.items()}
    assert verdicts == cpu_verdicts()
    assert not [label for label, res in stored.items() if res["status"] == "infra_error"]
    for fault in FAULTS:  # the recorded error names the fault
        if "cpu" in fault.devices and not fault.static_rule:
            res = stored[fault.file]
            named = f"{res['error'] or ''}\n{res['log_tail'] or ''}"
            assert re.search(fault.names, named, re.S), (fault.name, res["error"])
    assert stored["loop_forward.py"]["error"].endswith(f"no answer within {RUN_TIMEOUT_S} s")
    assert stored["loop_import.py"]["error"].endswith(f"no answer within {COMPILE_TIMEOUT_S} s")


def test_every_verdict_was_streamed(fault_run: dict[str, Any]) -> None:
    events = fault_run["events"]
    results = {e["label"]: e["status"] for e in events if e["event"] == "result"}
    assert results == {label: status for label, (status, _) in cpu_verdicts().items()}
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["candidates"] == len(fault_run["files"]) and summary["correct"] == 2
    run_dir = Path(events[0]["run_dir"])
    assert [p.name for p in (run_dir / "logs").glob("judge-*.log")] == ["judge-0.log"]  # one judge throughout
