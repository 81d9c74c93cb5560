"""Whole engine runs with the API generators against the loopback server: every fault handled, cost
recorded, the key absent from the run directory, and an offline replay with the same candidates.
Also the tune generator driving a best-of-n run with no model at all."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import static_judge
from generator_helpers import KEY_ENV, SECRET, registry_with
from loopback import LoopbackServer, Reply, Seen, answer, fault, malformed

from kforge.api import derive_seed
from kforge.engine import Engine
from kforge.recipe import load_recipe

RUN_SEED = 7
PROBLEMS = ("relu", "softmax")


def module(tag: str) -> str:
    return f"""```python
import torch
import triton
import triton.language as tl


@triton.jit
def kernel_{tag}(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


class ModelNew(torch.nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        kernel_{tag}[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
```
"""


THREE_BLOCKS = ("Plan:\n```python\n# pseudo\nfor tile in tiles: pass\n```\n" + module("three")
                + "Test it:\n```python\nprint(ModelNew()(torch.randn(4)))\n```\n")
# What each sample's request gets, attempt by attempt: one fault of each kind, then an answer.
SCRIPT: dict[tuple[str, int], list[Reply]] = {
    ("relu", 0): [fault(429, headers={"retry-after-ms": "50"}), answer(module("a"), tokens_in=1000, tokens_out=400)],
    ("relu", 1): [fault(500), fault(503), answer(module("b"), tokens_in=1100, tokens_out=410)],
    ("relu", 2): [answer(module("slow"), delay=1.0), answer(module("c"), tokens_in=1200, tokens_out=420)],
    ("relu", 3): [malformed(), answer(THREE_BLOCKS, tokens_in=1300, tokens_out=430)],
    ("softmax", 0): [answer("Use an online softmax with one pass over the row.", tokens_in=900, tokens_out=30)],
    ("softmax", 1): [answer(module("cut")[:200], finish="length", tokens_in=950, tokens_out=8192)],
    ("softmax", 2): [answer(module("d"), tokens_in=1000, tokens_out=500)],
    ("softmax", 3): [answer(module("e"), tokens_in=1000, tokens_out=510)],
}


class Scripted:
    """Answers by (problem, sample) and attempt, so the outcome does not depend on arrival order."""

    def __init__(self) -> None:
        self.seeds = {derive_seed(RUN_SEED, "best-of-n", p, k) % 2**31: (p, k) for p in PROBLEMS for k in range(4)}
        self.attempts: dict[tuple[str, int], int] = defaultdict(int)

    def __call__(self, seen: Seen) -> Reply:
        key = self.seeds[seen.body["seed"]]
        problem = re.search(r"problem `(\w+)`", seen.body["messages"][1]["content"])
        assert problem is not None and problem.group(1) == key[0]
        n = self.attempts[key]
        self.attempts[key] += 1
        replies = SCRIPT[key]
        return replies[min(n, len(replies) - 1)]


def write_recipe(tmp_path: Path, server_url: str) -> Path:
    recipe = tmp_path / "loopback.toml"
    recipe.write_text(f"""
[run]
name = "loopback"
seed = {RUN_SEED}
out = "{tmp_path / 'runs'}"

[problems]
source = "builtin"
ids = ["relu", "softmax"]

[backend]
name = "triton"

[generator]
name = "openai"
model = "loopback-coder"
base_url = "{server_url}/v1"
api_key_env = "{KEY_ENV}"
concurrency = 3
timeout_s = 0.5
max_retries = 3
backoff_s = 0.01
price_in_per_mtok = 3.0
price_out_per_mtok = 15.0

[search]
name = "best-of-n"
n = 4

[executor]
name = "static-judge"
""")
    return recipe


def run_engine(recipe: Path, run_dir: Path, registry: Any, *overrides: str) -> tuple[dict[str, Any], Engine]:
    rec = load_recipe(recipe, list(overrides), registry=registry, env={})
    engine = Engine(rec, run_dir=run_dir, registry=registry)
    return asyncio.run(engine.run()), engine


def table(run_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql)]
    finally:
        db.close()


def test_run_against_loopback_then_replay_offline(tmp_path: Path, server: LoopbackServer, api_key: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_with(static_judge)
    server.responder = Scripted()
    recipe = write_recipe(tmp_path, server.url)
    first_dir = tmp_path / "runs" / "first"
    summary, engine = run_engine(recipe, first_dir, registry)

    # every fault handled: 2 + 3 + 2 + 2 requests for relu, one each for softmax
    assert len(server.requests()) == 13
    cands = table(first_dir, "SELECT * FROM candidates ORDER BY proposal_id")
    assert [c["proposal_id"] for c in cands] == ["relu:s0", "relu:s1", "relu:s2", "relu:s3", "softmax:s2",
                                                 "softmax:s3"]
    three = next(c for c in cands if c["proposal_id"] == "relu:s3")
    assert "kernel_three" in (first_dir / "candidates" / f"{three['id']}.py").read_text()
    outcomes = {p["id"]: p["outcome"] for p in table(first_dir, "SELECT * FROM proposals")}
    assert "no code" in outcomes["softmax:s0"] and "cut off" in outcomes["softmax:s1"]
    assert summary["correct"] == 6

    # cost recorded per candidate, from usage and the recipe's prices
    for c in cands:
        assert c["cost_usd"] == pytest.approx((c["tokens_in"] * 3.0 + c["tokens_out"] * 15.0) / 1e6)
        assert c["model"] == "loopback-coder" and c["tokens_in"] > 0
    usage = engine.generator.usage_summary()
    assert usage["requests"] == 8 and usage["retries"] == 5 and usage["tokens_out"] == 400 + 410 + 420 + 430 + \
        30 + 8192 + 500 + 510
    assert usage["cost_usd"] > sum(c["cost_usd"] for c in cands), "answers without code cost too"

    # the key is nowhere in the run directory (store, events, recipe copies, cache, candidates)
    files = [f for f in first_dir.rglob("*") if f.is_file()]
    assert any(f.parent.parent.name == "generations" for f in files)
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f"the API key leaked into {f}"
    assert SECRET not in repr(engine.generator.__dict__)

    # replay: no server, no key, the first run's cache; the same candidates, candidate for candidate
    server.stop()
    monkeypatch.delenv(KEY_ENV)
    replay_dir = tmp_path / "runs" / "replay"
    summary2, _ = run_engine(recipe, replay_dir, registry, f"generator.cache={first_dir / 'generations'}",
                             "generator.replay_only=true")
    again = table(replay_dir, "SELECT * FROM candidates ORDER BY proposal_id")
    keys = ("proposal_id", "problem_id", "code_hash", "label", "model", "tokens_in", "tokens_out", "cost_usd")
    assert [{k: c[k] for k in keys} for c in again] == [{k: c[k] for k in keys} for c in cands]
    assert summary2["correct"] == summary["correct"]
    assert {p["id"]: p["outcome"].split(":")[0] for p in table(replay_dir, "SELECT * FROM proposals")} == \
        {k: v.split(":")[0] for k, v in outcomes.items()}


def test_tune_generator_runs_best_of_n_offline(tmp_path: Path) -> None:
    registry = registry_with(static_judge)
    recipe = tmp_path / "tune.toml"
    recipe.write_text("""
[run]
seed = 3
[problems]
source = "builtin"
ids = ["matmul", "softmax"]
[generator]
name = "tune"
[search]
name = "best-of-n"
n = 6
[executor]
name = "static-judge"
""")
    summary, _ = run_engine(recipe, tmp_path / "run", registry)
    cands = table(tmp_path / "run", "SELECT * FROM candidates")
    assert len(cands) == 12 and len({c["code_hash"] for c in cands}) == 12
    assert sum(c["label"] == "parent (unchanged)" for c in cands) == 2
    assert summary["correct"] == 12
