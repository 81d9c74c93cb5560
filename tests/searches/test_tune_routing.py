"""Evolution's tune edits go to the built-in ``tune`` generator, with no model call, while the other
edit types go to the recipe's LLM generator: a scripted model on the loopback server (real HTTP)
and the KNOB_* judge; the routed generator's options from ``search.tune``; and what a tune
generator with nothing left for a parent means when it is not the run's generator."""

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

from kforge.api import Generator, Proposal
from kforge.engine import Engine
from kforge.generators.tune import TuneGenerator
from kforge.options import RecipeError
from kforge.recipe import load_recipe
from kforge.searches.evolution import Evolution

FENCE = re.compile(r"```python\n(.*?)```", re.S)


class Model:
    """Answers like a model: no parent -> random knobs; a parent -> one knob moved (a SEARCH/REPLACE
    edit when asked for edits). Records every prompt it was sent."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def __call__(self, seen: Seen) -> Any:
        self.seen.append(seen)
        prompt = seen.body["messages"][1]["content"]
        rng = random.Random(seen.body["seed"])
        if "current candidate to improve" not in prompt:
            return answer("```python\n" + H.knob_module({k: rng.randrange(1, 8) for k in H.KNOBS}) + "```")
        values = H.knobs_of(FENCE.findall(prompt.split("current candidate to improve", 1)[1])[0])
        k = rng.choice(H.KNOBS)
        new = min(max(values[k] + rng.choice((-1, 1)), 0), 7)
        if "<<<<<<< SEARCH" in prompt:
            return answer(f"<<<<<<< SEARCH\nKNOB_{k} = {values[k]}\n=======\nKNOB_{k} = {new}\n>>>>>>> REPLACE\n")
        return answer("```python\n" + H.knob_module({**values, k: new}) + "```")


def recipe(url: str, search_extra: str = "") -> str:
    return f"""
[run]
seed = 6
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
name = "evolution"
generations = 5
islands = 2
population = 4
migration_interval = 2
features = ["search_helpers:knob_a", "search_helpers:knob_b"]
edit_mix = {{diff = 1, tune = 1}}
{search_extra}
[executor]
name = "knob-judge"
"""


def run(tmp: Path, text: str, name: str = "run") -> tuple[dict[str, Any], Engine, Path]:
    path = tmp / f"{name}.toml"
    path.write_text(text)
    registry = H.make_registry(landscape_judge)
    engine = Engine(load_recipe(path, [], registry=registry, env={}), run_dir=tmp / name, registry=registry)
    return asyncio.run(engine.run()), engine, tmp / name


def rows(run_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql)]
    finally:
        db.close()


def test_tune_edits_go_to_the_tune_generator_and_the_rest_to_the_model(tmp_path: Path) -> None:
    model = Model()
    with loopback() as server:
        server.responder = model
        summary, engine, run_dir = run(tmp_path, recipe(server.url, 'tune = {max_changes = 1, include = ["KNOB_*"]}'))
    assert set(engine.routes) == {"tune"} and engine.routes["tune"].config["max_changes"] == 1
    assert engine.plan()["generator_routes"]["tune"]["include"] == ["KNOB_*"]  # what --dry-run prints
    props = {p["id"]: {**p, "params": json.loads(p["params"])} for p in rows(run_dir, "SELECT * FROM proposals")}
    cands = {c["proposal_id"]: c for c in rows(run_dir, "SELECT * FROM candidates")}
    tune = [p for p in props.values() if p["params"]["edit"] == "tune"]
    other = [p for p in props.values() if p["params"]["edit"] != "tune"]
    assert len(tune) >= 5 and other

    # the model was asked exactly once per non-tune proposal, never for a tune edit
    asked = [s.body["seed"] for s in model.seen]
    wire = engine.generator.wire_seed
    assert sorted(asked) == sorted(wire(p["seed"]) for p in other)
    assert not {wire(p["seed"]) for p in tune} & set(asked)
    assert not any("generator_hint" in s.body["messages"][1]["content"] for s in model.seen)

    # tune edits: candidates by the tune generator, free, one KNOB constant of the parent changed
    made = [cands[p["id"]] for p in tune if p["id"] in cands]
    assert made and all(c["generator"] == "tune" and c["model"] is None and c["tokens_in"] == 0 for c in made)
    assert all(p["tokens_in"] == 0 and p["cost_usd"] == 0 for p in tune)
    for p in tune:
        c = cands.get(p["id"])
        if c is None:
            continue
        changes = json.loads(c["meta"])["changes"]
        assert len(changes) == 1 and next(iter(changes)).startswith("KNOB_")
        before, after = H.knobs_of(p["params"]["parent_code"]), H.knobs_of(c["code"])
        assert sum(before[k] != after[k] for k in H.KNOBS) == 1
    assert all(cands[p["id"]]["generator"] == "openai" for p in other if p["id"] in cands)
    assert summary["usage"]["tokens"] == 150 * len(model.seen)  # the loopback's usage: 100 in, 50 out
    # tune's candidates were judged like any other, and some were correct
    judged = rows(run_dir, "SELECT c.generator, r.status FROM candidates c JOIN results r ON r.candidate_id = c.id")
    assert any(r["generator"] == "tune" and r["status"] == "correct" for r in judged)
    assert engine.search.done()


def test_route_tune_off_sends_tune_edits_to_the_model(tmp_path: Path) -> None:
    model = Model()
    with loopback() as server:
        server.responder = model
        _, engine, run_dir = run(tmp_path, recipe(server.url, "route_tune = false"))
    assert engine.routes == {}
    props = rows(run_dir, "SELECT * FROM proposals")
    assert any(json.loads(p["params"])["edit"] == "tune" for p in props)
    assert len(model.seen) == len(props)
    assert {c["generator"] for c in rows(run_dir, "SELECT generator FROM candidates")} == {"openai"}


def test_the_routed_generators_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(recipe("http://127.0.0.1:9", "tune = {max_change = 1}"))
    registry = H.make_registry(landscape_judge)
    rec = load_recipe(path, [], registry=registry, env={})
    with pytest.raises(RecipeError, match=r"search\.tune\.max_change is not an option of generator 'tune'.*"
                                          r"max_changes"):
        Engine(rec, run_dir=tmp_path / "bad", registry=registry)
    # with tune as the recipe's generator there is nothing to route
    text = re.sub(r"\[generator\].*?\[search\]", '[generator]\nname = "tune"\n[search]', recipe("x"), flags=re.S)
    path.write_text(text.replace("edit_mix", 'tune = {max_changes = 1}\nedit_mix'))
    rec = load_recipe(path, [], registry=registry, env={})
    engine = Engine(rec, run_dir=tmp_path / "ok", registry=registry)
    assert engine.routes == {} and engine.generator.name == "tune"


# -- the search, in-process --------------------------------------------------------------------------
class ModelGenerator(Generator):
    name = "openai"  # what the search sees of the run's generator: its name


def exhausting_tune(p: Proposal) -> str | None:
    """A tune generator with nothing for any parent; the model's edits work."""
    return None if p.params["edit"] == "tune" else H.mutate(p)


def _drive(routed: bool) -> tuple[Evolution, H.Driver]:
    search = Evolution(islands=1, population=6, generations=6, edit_mix={"diff": 1, "tune": 1},
                       features=H.KNOB_FEATURES, migrants=0)
    ctx = H.context(("relu",))
    ctx.generator = ModelGenerator() if routed else TuneGenerator()
    search.setup(ctx)
    return search, H.Driver(search, gen=exhausting_tune).run()


def test_a_tune_generator_with_nothing_left_does_not_retire_the_parent_from_the_models_edits() -> None:
    search, d = _drive(routed=True)
    progs = search.problems["relu"]["islands"][0]["programs"]
    spent = {cid for cid, p in progs.items() if p.get("tune_exhausted")}
    assert spent and not any(p.get("exhausted") for p in progs.values())
    by_gen: dict[str, set[int]] = {}
    for p in d.proposals:
        if p.params["edit"] == "tune":
            by_gen.setdefault(p.parent_id or "", set()).add(p.params["generation"])
    # a parent is tuned in one generation at most (then tune has nothing for it), yet the model keeps
    # building on it
    assert all(len(gens) == 1 for gens in by_gen.values())
    later_diffs = [p for p in d.proposals if p.params["edit"] == "diff" and p.parent_id in spent
                   and p.params["generation"] > min(by_gen[p.parent_id or ""])]
    assert later_diffs

    # when tune is the run's only generator, nothing more from it means nothing more for that parent
    search, d = _drive(routed=False)
    progs = search.problems["relu"]["islands"][0]["programs"]
    retired = {cid for cid, p in progs.items() if p.get("exhausted")}
    assert retired and not any(p.get("tune_exhausted") for p in progs.values())
    first_told: dict[str | None, int] = {}
    for p in d.proposals:
        if p.params["edit"] == "tune":
            first_told.setdefault(p.parent_id, p.params["generation"])
    assert not [p for p in d.proposals if p.parent_id in retired and p.params["generation"] > first_told[p.parent_id]]
