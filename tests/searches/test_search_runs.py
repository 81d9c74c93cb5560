"""Whole engine runs of the evolution and refine searches: the real tune generator on a matmul with a
known optimum, a scripted model on the loopback server (real HTTP, real prompts, real SEARCH/REPLACE
edits), the store checked for duplicates, a run that crashes mid-evaluation resumed to the same store,
and the shipped recipes."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import landscape_judge
import pytest
import search_helpers as H
from loopback import Seen, answer, loopback

from kforge.engine import Engine
from kforge.recipe import load_recipe
from kforge.runtime import protocol as P

REPO = Path(__file__).resolve().parents[2]


def run_engine(tmp: Path, text: str, name: str = "run", *overrides: str, modules: tuple[Any, ...] = ()
               ) -> tuple[dict[str, Any], Engine, Path]:
    recipe = tmp / f"{name}.toml"
    recipe.write_text(text)
    registry = H.make_registry(landscape_judge, *modules)
    rec = load_recipe(recipe, list(overrides), registry=registry, env={})
    engine = Engine(rec, run_dir=tmp / name, registry=registry)
    return asyncio.run(engine.run()), engine, tmp / name


def rows(run_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql)]
    finally:
        db.close()


def assert_never_judged_twice(run_dir: Path) -> None:
    cands = rows(run_dir, "SELECT id, problem_id, code_hash FROM candidates")
    assert len({(c["problem_id"], c["code_hash"]) for c in cands}) == len(cands)
    results = rows(run_dir, "SELECT candidate_id FROM results")
    assert len(results) == len({r["candidate_id"] for r in results}) == len(cands)


TUNE_EVOLUTION = """
[run]
seed = 1
[problems]
source = "builtin"
ids = ["matmul"]
[generator]
name = "tune"
[search]
name = "evolution"
generations = 10
islands = 3
population = 4
migration_interval = 2
features = ["tile_size", "warps"]
[executor]
name = "landscape-judge"
"""


def test_evolution_with_the_tune_generator_finds_better_matmul_tilings(tmp_path: Path) -> None:
    summary, engine, run_dir = run_engine(tmp_path, TUNE_EVOLUTION)
    props = {p["id"]: {**p, "params": json.loads(p["params"])} for p in rows(run_dir, "SELECT * FROM proposals")}
    cands = rows(run_dir, "SELECT c.id, c.proposal_id, c.code, r.status, r.speedup FROM candidates c "
                          "JOIN results r ON r.candidate_id = c.id")
    assert len(props) == 3 * 4 * 10 and len(cands) == len(props)  # tune never repeats itself
    assert_never_judged_twice(run_dir)

    # fitness improves over generations (best so far, over all islands)
    by_gen = [0.0] * 10
    for c in cands:
        g = props[c["proposal_id"]]["params"]["generation"]
        by_gen[g] = max(by_gen[g], c["speedup"] or 0.0)
    curve = [max(by_gen[: g + 1]) for g in range(10)]
    start = landscape_judge.matmul_speedup(landscape_judge.matmul_constants(
        engine.ctx.problems[0].solutions()["triton"].read_text()))
    assert curve[0] <= 2.0 < curve[-1] and start is not None and curve[-1] > 1.8 * start
    best = max(cands, key=lambda c: c["speedup"] or 0)
    consts = landscape_judge.matmul_constants(best["code"])
    assert consts["num_warps"] == 8 and consts["BLOCK_M"] * consts["BLOCK_N"] >= 128 * 64  # towards the optimum
    failed = len(cands) - summary["correct"]  # tiles over the shared-memory limit fail to compile
    assert 0 < failed < len(cands) // 4

    # tune edits carried their parent; every parent is a judged candidate of the run
    ids = {c["id"] for c in cands}
    later = [p for p in props.values() if p["params"]["generation"] > 0]
    assert later and all(p["parent_id"] in ids and p["params"]["parent_code"] for p in later)

    # migration moved programs between islands: a parent born on another island
    island_of = {c["id"]: props[c["proposal_id"]]["params"]["island"] for c in cands}
    moved = [p for p in later if island_of[p["parent_id"]] != p["params"]["island"]]
    assert moved and all(p["params"]["generation"] >= 2 for p in moved)

    # the archives fill distinct cells; metrics report per-island best, fill and generation
    m = engine.search.metrics()["problems"]["matmul"]
    assert m["migrations"] > 0 and all(i["generation"] == 10 for i in m["islands"])
    assert all(i["cells"] >= 4 for i in m["islands"]) and m["best"]["speedup"] == curve[-1]
    cells = {c for isl in engine.search.problems["matmul"]["islands"] for c in isl["archive"]}
    assert len(cells) >= 6


def test_the_same_recipe_gives_the_same_proposals_and_candidates(tmp_path: Path) -> None:
    text = TUNE_EVOLUTION.replace("generations = 10", "generations = 4").replace("islands = 3", "islands = 2") \
        .replace('ids = ["matmul"]', 'ids = ["matmul", "softmax"]')
    sql = ("SELECT p.id, p.seed, p.params, c.code_hash, r.status FROM proposals p LEFT JOIN candidates c "
           "ON c.proposal_id = p.id LEFT JOIN results r ON r.candidate_id = c.id ORDER BY p.seq")
    _, _, a = run_engine(tmp_path, text, "a")
    _, _, b = run_engine(tmp_path, text, "b")
    first = rows(a, sql)
    assert len(first) == 2 * 2 * 4 * 4 and rows(b, sql) == first
    _, _, c = run_engine(tmp_path, text, "c", "run.seed=2")
    assert rows(c, sql) != first


# -- a scripted model on the loopback server ---------------------------------------------------------
FENCE = re.compile(r"```python\n(.*?)```", re.S)


class KnobModel:
    """Answers like a model that reads its prompt: no parent -> a random knob module; a parent -> one knob
    moved, as a SEARCH/REPLACE edit when the prompt asks for edits, else the full module."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, seen: Seen) -> Any:
        prompt = seen.body["messages"][1]["content"]
        self.prompts.append(prompt)
        rng = random.Random(seen.body["seed"])
        parent = None
        if "current candidate to improve" in prompt:
            parent = FENCE.findall(prompt.split("current candidate to improve", 1)[1])[0]
        if parent is None:
            return answer("```python\n" + H.knob_module({k: rng.randrange(1, 8) for k in H.KNOBS}) + "```")
        values = H.knobs_of(parent)
        k = rng.choice(H.KNOBS)
        new = min(max(values[k] + rng.choice((-1, 1)), 0), 7)
        if "<<<<<<< SEARCH" in prompt:
            return answer(f"Moving {k}.\n<<<<<<< SEARCH\nKNOB_{k} = {values[k]}\n=======\nKNOB_{k} = {new}\n"
                          f">>>>>>> REPLACE\n")
        return answer("```python\n" + H.knob_module({**values, k: new}) + "```")


def model_recipe(url: str, search: str) -> str:
    return f"""
[run]
seed = 4
[problems]
source = "builtin"
ids = ["relu"]
[generator]
name = "openai"
model = "loopback-coder"
base_url = "{url}/v1"
api_key_env = ""
backoff_s = 0.01
timeout_s = 10
[search]
{search}
[executor]
name = "knob-judge"
"""


def test_evolution_against_a_model_on_the_loopback_server(tmp_path: Path) -> None:
    model = KnobModel()
    with loopback() as server:
        server.responder = model
        search = ('name = "evolution"\ngenerations = 6\nislands = 2\npopulation = 3\nmigration_interval = 2\n'
                  'features = ["search_helpers:knob_a", "search_helpers:knob_b"]\n'
                  'edit_mix = {diff = 2, full = 1, crossover = 1}')
        _, engine, run_dir = run_engine(tmp_path, model_recipe(server.url, search))
    assert len(model.prompts) == 2 * 3 * 6
    props = rows(run_dir, "SELECT * FROM proposals")
    assert len(props) == 36
    # the model saw its parents and the judge's verdict on them, and answered with edits that applied
    improving = [p for p in model.prompts if "current candidate to improve" in p]
    assert len(improving) >= 24
    assert all("Feedback on that candidate from the judge" in p and "speedup over PyTorch eager" in p
               for p in improving)
    assert any("<<<<<<< SEARCH" in p for p in improving)
    metas = [json.loads(c["meta"]) for c in rows(run_dir, "SELECT meta FROM candidates")]
    assert sum(m.get("extraction") == "edit" for m in metas) >= 5
    # duplicates happen (a small space, a model that repeats itself) and are never judged twice
    dups = [p for p in props if (p["outcome"] or "").startswith("duplicate of")]
    assert dups and engine.search.problems["relu"]["duplicates"] == len(dups)
    assert_never_judged_twice(run_dir)
    assert engine.search.done()


def test_refine_sends_the_compile_error_back_and_the_model_fixes_it(tmp_path: Path) -> None:
    broken = H.knob_module({"A": 1, "B": 2, "C": 3, "D": 4}).replace("def forward(self, x):",
                                                                     "def forward(self, x:")
    fixed = H.knob_module({"A": 1, "B": 2, "C": 3, "D": 4})
    with loopback() as server:
        server.push(answer(f"Here it is:\n```python\n{broken}```"), answer(f"Fixed:\n```python\n{fixed}```"))
        _, engine, run_dir = run_engine(
            tmp_path, model_recipe(server.url, 'name = "refine"\nturns = 2').replace("knob-judge", "static-judge"),
            modules=(__import__("static_judge"),))
        seen = server.requests()
    assert len(seen) == 2
    cands = rows(run_dir, "SELECT c.id, c.code, r.status, r.result FROM candidates c JOIN results r "
                          "ON r.candidate_id = c.id ORDER BY c.seq")
    assert [c["status"] for c in cands] == [P.COMPILE_ERROR, P.CORRECT]
    error = json.loads(cands[0]["result"])["error"]
    assert "never closed" in error or "invalid syntax" in error or "expected" in error
    first, second = (s.body["messages"][1]["content"] for s in seen)
    assert "current candidate to improve" not in first
    assert error.splitlines()[0] in second  # the compile error excerpt went back to the model
    assert broken.strip().splitlines()[-3] in second  # with the code that failed
    assert "compile_error" in second or "compile error" in second
    m = engine.search.metrics()
    assert m["fixes"] == 1 and m["best"]["relu"]["turn"] == 1


# -- crash and resume --------------------------------------------------------------------------------
class Crash(Exception):
    pass


def test_a_run_that_crashes_mid_evaluation_resumes_to_the_same_store(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = """
[run]
seed = 3
[problems]
source = "builtin"
ids = ["relu", "softmax"]
[generator]
name = "knobs"
[search]
name = "evolution"
generations = 5
islands = 2
population = 3
migration_interval = 2
features = ["search_helpers:knob_a", "search_helpers:knob_b"]
edit_mix = {diff = 1, crossover = 1, refine = 1}
[executor]
name = "knob-judge"
"""
    _, _, full = run_engine(tmp_path, text, "full")

    calls = {"n": 0}
    real = landscape_judge.KnobJudge.evaluate

    async def crashing(self: Any, request: P.EvalRequest) -> P.EvalResult:
        calls["n"] += 1
        if calls["n"] == 25:
            raise Crash("the judge machine went away")
        return await real(self, request)

    monkeypatch.setattr(landscape_judge.KnobJudge, "evaluate", crashing)
    with pytest.raises(Crash):
        run_engine(tmp_path, text, "cut")
    cut = tmp_path / "cut"
    kept = rows(cut, "SELECT candidate_id FROM results")
    total = len(rows(full, "SELECT id FROM candidates"))
    assert 10 < len(kept) < total
    waiting = rows(cut, "SELECT c.id FROM candidates c LEFT JOIN results r ON r.candidate_id = c.id "
                        "WHERE r.candidate_id IS NULL")
    assert waiting  # killed mid-evaluation: candidates recorded, their verdicts not
    monkeypatch.setattr(landscape_judge.KnobJudge, "evaluate", real)

    registry = H.make_registry(landscape_judge)
    rec = load_recipe(tmp_path / "cut.toml", [], registry=registry, env={})
    asyncio.run(Engine(rec, run_dir=cut, registry=registry, resume=True).run())

    sql = ("SELECT p.id, p.seed, p.params, p.outcome, c.code_hash, r.status, r.speedup FROM proposals p "
           "LEFT JOIN candidates c ON c.proposal_id = p.id LEFT JOIN results r ON r.candidate_id = c.id")

    def normal(run_dir: Path) -> list[Any]:  # candidate ids follow arrival order: compare by code
        hashes = {c["id"]: c["code_hash"] for c in rows(run_dir, "SELECT id, code_hash FROM candidates")}
        out = []
        for r in rows(run_dir, sql):
            text = json.dumps(r, sort_keys=True)
            out.append(re.sub(r"c\d{4}", lambda m: hashes.get(m.group(0), m.group(0)), text))
        return sorted(out)

    assert normal(cut) == normal(full)
    assert_never_judged_twice(cut)
    assert {r["candidate_id"] for r in kept} <= {r["candidate_id"] for r in rows(cut, "SELECT candidate_id FROM results")}


# -- the shipped recipes -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["evolution", "refine"])
def test_shipped_recipes_validate_and_run_offline(name: str, tmp_path: Path) -> None:
    registry = H.make_registry(landscape_judge)
    path = REPO / "recipes" / f"{name}.toml"
    rec = load_recipe(path, [f"run.out={tmp_path}", "executor.name=landscape-judge", 'problems.ids=["matmul"]'],
                      registry=registry, env={})
    assert rec.tables["generator"]["name"] == "tune"
    engine = Engine(rec, run_dir=tmp_path / name, registry=registry)
    summary = asyncio.run(engine.run())
    assert summary["correct"] > 0 and engine.search.done()
    assert_never_judged_twice(tmp_path / name)
