"""A run killed with SIGKILL mid-evaluation resumes to the same store as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart" / "candidates"

pytestmark = pytest.mark.slow


def _recipe(tmp: Path) -> Path:
    cands = tmp / "cands"
    for rel in ["relu/correct.py", "relu/wrong_slope.py", "softmax/correct.py", "softmax/naive.py",
                "layernorm/correct.py", "layernorm/one_pass.py"]:
        dst = cands / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(QUICK / rel, dst)
    recipe = tmp / "r.toml"
    recipe.write_text(f"""
[run]
name = "resume"
seed = 7
[problems]
ids = ["relu", "softmax", "layernorm"]
[generator]
name = "replay"
path = "{cands.as_posix()}"
[search]
name = "best-of-n"
n = 2
[eval]
min_samples = 3
max_samples = 5
max_timing_s = 1
""")
    return recipe


def _env() -> dict[str, str]:
    return {**os.environ, "KFORGE_LOAD_PLUGINS": "", "PYTHONUNBUFFERED": "1"}


def _snapshot(run_dir: Path) -> dict[str, object]:
    db = sqlite3.connect(run_dir / "kforge.db")
    cands = db.execute("SELECT id, problem_id, label, code_hash, proposal_id FROM candidates ORDER BY seq").fetchall()
    results = db.execute("SELECT candidate_id, status FROM results ORDER BY candidate_id").fetchall()
    proposals = db.execute("SELECT id, seed, outcome FROM proposals ORDER BY id").fetchall()
    status = json.loads(db.execute("SELECT value FROM meta WHERE key='status'").fetchone()[0])
    db.close()
    return {"candidates": cands, "results": results, "proposals": proposals, "status": status}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    done = subprocess.run([sys.executable, "-m", "kforge", "run", str(recipe), "--json", "--run-dir", str(full_dir)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([sys.executable, "-m", "kforge", "run", str(recipe), "--json", "--run-dir", str(cut_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(),
                            start_new_session=True)
    assert proc.stdout is not None
    seen = 0
    deadline = time.time() + 300
    for line in proc.stdout:
        if json.loads(line)["event"] == "result":
            seen += 1
            if seen == 2:  # a third candidate is being judged right now
                break
        assert time.time() < deadline
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator, its judge and the sandbox: no clean-up at all
    proc.wait()
    killed = _snapshot(cut_dir)
    assert killed["status"] == "running"
    kept = len(killed["results"])  # type: ignore[arg-type]
    assert 2 <= kept < 6

    resumed = subprocess.run([sys.executable, "-m", "kforge", "resume", str(cut_dir), "--json"],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert events[0]["event"] == "run_started" and events[0]["resumed"] is True
    assert events[-2]["event"] == "summary"

    full, after = _snapshot(full_dir), _snapshot(cut_dir)
    assert after["status"] == "finished"
    assert after["candidates"] == full["candidates"]  # same candidates, same ids, same order
    assert after["proposals"] == full["proposals"]  # same seeds, same outcomes
    assert after["results"] == full["results"]  # every candidate judged once, same verdicts
    ids = [c[0] for c in after["candidates"]]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)) == 6
    # the results recorded before the kill were kept, not judged again
    assert sum(1 for e in events if e["event"] == "result") == 6 - kept
    # each problem's winner was re-timed once its samples were judged, in both runs; none is left half done
    for run_dir in (full_dir, cut_dir):
        db = sqlite3.connect(run_dir / "kforge.db")
        rows = db.execute("SELECT problem_id, status, verdict FROM retimes").fetchall()
        db.close()
        assert {r[0] for r in rows} == {"relu", "softmax", "layernorm"}
        assert all(r[1] is not None and r[2] is not None for r in rows)
    assert {e["problem"] for e in events if e["event"] == "retime"} == {"relu", "softmax", "layernorm"}
    assert all(b.get("retimed") is not None for b in events[-2]["best"].values())


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kforge", "resume", str(tmp_path)], capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 2
    assert "not a kforge run directory" in proc.stderr
