"""kill -9 of kforge serve in the middle of a batch, then a restart on the same queue: no accepted job
is lost, none is judged twice, and a retried submission finds the jobs it made."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from kforge.client import Client  # noqa: E402
from kforge.serve.launch import ServerProcess  # noqa: E402

RELU = Path(__file__).resolve().parents[1] / "recipes" / "quickstart" / "candidates" / "relu"


def _rows(db: Path) -> dict[str, tuple[str, int, str | None]]:
    con = sqlite3.connect(str(db))
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in con.execute("SELECT id, state, attempts, result FROM jobs")}
    finally:
        con.close()


def test_sigkill_mid_batch_then_restart_loses_nothing_and_judges_nothing_twice(
        tmp_path: Path, base_env: dict[str, str]) -> None:
    db = tmp_path / "queue.db"
    args = ["--device", "cpu", "--set", "eval.min_samples=0"]
    jobs = [{"problem": "relu", "code": (RELU / name).read_text()}
            for name in ("correct.py", "wrong_slope.py")]
    first = ServerProcess(args, db=db, env=dict(base_env)).start()
    try:
        with Client(first.url) as c:
            batch_id, submitted = c.submit_batch(jobs, idempotency_key="batch-1")
            ids = [j.id for j in submitted]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:  # until one result is in and the next is being judged
                states = [c.get(i).state for i in ids]
                if "done" in states and "running" in states:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the batch did not get going: {states}")
        os.kill(first.pid, signal.SIGKILL)  # the server alone, with no chance to clean up
        first.proc.wait()
    finally:
        first.kill()  # then its orphaned judges
    before = _rows(db)
    assert set(before) == set(ids)  # every accepted job is on disk
    done_before = {i: row for i, row in before.items() if row[0] == "done"}
    assert done_before and any(row[0] == "running" for row in before.values())

    with ServerProcess(args, db=db, env=dict(base_env)) as second:
        assert second.info["recovered"] >= 1  # the interrupted jobs went back to the queue
        with Client(second.url) as c:
            again_id, again = c.submit_batch(jobs, idempotency_key="batch-1")  # a client retrying its submit
            assert again_id == batch_id and [j.id for j in again] == ids and not any(j.created for j in again)
            streamed = list(c.stream(batch_id=batch_id))
    assert sorted(j.id for j in streamed) == sorted(ids)  # each once
    statuses = {j.id: j.result.status for j in streamed if j.result}
    assert [statuses[i] for i in ids] == ["correct", "incorrect"]
    after = _rows(db)
    assert set(after) == set(ids)  # no job added, none lost
    for job_id, (state, attempts, result) in done_before.items():
        assert after[job_id] == (state, attempts, result)  # judged before the kill: never judged again
        assert attempts == 1
    for job_id in set(ids) - set(done_before):
        assert after[job_id][0] == "done"
        assert json.loads(after[job_id][2])["request_id"] == job_id
