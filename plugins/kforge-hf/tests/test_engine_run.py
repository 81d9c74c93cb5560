"""Whole kforge runs through the engine with the hf generator and the ttt search: a run killed in
the middle of a step, then resumed from its store as ``kforge resume`` does, to the last step."""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import engine_doubles  # noqa: E402
from kforge.engine import Engine  # noqa: E402
from kforge.recipe import load_recipe, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def registry() -> Any:
    import pluggy
    from kforge import hookspecs
    from kforge.plugins import DEFAULT_PLUGINS, build_registry

    import kforge_hf

    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.register(kforge_hf, name="kforge-hf")
    pm.register(engine_doubles, name="engine_doubles")
    return build_registry(pm)


def recipe(tmp_path: Path, model: Path, prompt: dict[str, str]) -> dict[str, Any]:
    return {
        "run": {"name": "ttt-test", "seed": 5, "out": str(tmp_path / "runs")},
        "problems": {"source": "builtin", "ids": ["relu"], "shapes": "small"},
        "backend": {"name": "plain-text"},
        "generator": {"name": "hf", "model_path": str(model), "device": "cpu", "max_new_tokens": 3, "extract": "raw",
                      "lora_r": 8, "lora_alpha": 16, "train_micro_batch": 64, **prompt},
        "search": {"name": "ttt", "steps": 3, "groups": 2, "rollouts": 4, "learning_rate": 0.02, "reward": "linear",
                   "correct_bonus": 0.1},
        "executor": {"name": "text-judge"},
    }


def test_a_killed_ttt_run_resumes_to_the_end(tiny_model: Path, short_prompt: dict[str, str], tmp_path: Path) -> None:
    reg = registry()
    rec = validate(recipe(tmp_path, tiny_model, short_prompt), None, reg)
    run_dir = tmp_path / "run"
    engine_doubles.TextJudge.seen = 0
    engine_doubles.TextJudge.crash_after = 8  # the second evaluation of the second step
    with pytest.raises(engine_doubles.Crash):
        asyncio.run(Engine(rec, run_dir=run_dir, registry=reg).run())
    db = sqlite3.connect(run_dir / "kforge.db")
    state = json.loads(db.execute("SELECT value FROM state WHERE key = 'search'").fetchone()[0])
    db.close()
    assert state["step"] == 1 and state["round"] is not None and state["checkpoint"] == "ttt/step-0000"
    assert len(state["history"]) == 1

    # `kforge resume`: the recipe from the run directory, a fresh engine, generator and search
    tables = json.loads((run_dir / "recipe.json").read_text())
    resumed = Engine(validate(tables, None, reg), run_dir=run_dir, registry=reg, resume=True)
    summary = asyncio.run(resumed.run())
    assert summary["stopped"] is None

    db = sqlite3.connect(run_dir / "kforge.db")
    state = json.loads(db.execute("SELECT value FROM state WHERE key = 'search'").fetchone()[0])
    status = json.loads(db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()[0])
    proposals = db.execute("SELECT id, params, outcome FROM proposals ORDER BY seq").fetchall()
    metas = {pid: json.loads(meta) for pid, meta in db.execute("SELECT proposal_id, meta FROM candidates")}
    db.close()
    assert status == "finished"
    assert state["step"] == 3 and state["round"] is None and state["checkpoint"] == "ttt/step-0002"
    assert [m["step"] for m in state["history"]] == [0, 1, 2]
    for m in state["history"]:  # the figures the store keeps per step
        for key in ("reward_mean", "reward_max", "correct_rate", "best_speedup", "kl", "lr", "loss"):
            assert key in m
    assert len(proposals) == 3 * 2 * 4 and all(outcome for _, _, outcome in proposals)
    # every candidate was sampled from the adapter of its step: the resumed generator reloaded it
    for pid, params, _ in proposals:
        if pid in metas:
            step = json.loads(params)["ttt_step"]
            trained_before = sum(1 for m in state["history"][:step] if m["trained_rollouts"])
            assert metas[pid]["adapter_version"] == trained_before, pid
    lines = (run_dir / "ttt" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]
    assert sorted(p.name for p in (run_dir / "ttt").glob("step-*")) == ["step-0001", "step-0002"]


def test_the_ttt_recipe_validates(tiny_model: Path) -> None:
    rec = load_recipe(REPO / "recipes" / "ttt.toml", [f"generator.model_path={tiny_model}"], registry=registry(),
                      env={})
    assert rec.tables["generator"]["name"] == "hf" and rec.tables["search"]["name"] == "ttt"
    engine = Engine(rec, registry=registry())  # builds generator and search: nothing is loaded yet
    assert engine.generator.loaded is False
    assert engine.plan()["search"]["name"] == "ttt"



def test_the_gpu_ttt_recipe_validates(tiny_model: Path) -> None:
    """recipes/ttt_gpu.toml (benchmarks/gpu_ttt.sh) with its prompt templates, as the script sets it: the
    prompt is the short one the script's model is trained on, with or without a parent candidate."""
    from types import SimpleNamespace

    from kforge.api import Proposal
    from kforge.backends.triton import TritonBackend
    from kforge.problems import builtin_problems

    rec = load_recipe(REPO / "recipes" / "ttt_gpu.toml", [f"generator.model_path={tiny_model}",
                                                          "generator.max_new_tokens=349"], registry=registry(), env={})
    engine = Engine(rec, registry=registry())
    assert engine.generator.loaded is False and engine.search.name == "ttt"
    relu = next(p for p in builtin_problems() if p.id == "relu")
    ctx = SimpleNamespace(problems_by_id={"relu": relu}, backend=TritonBackend(), device={})
    for params in ({}, {"parent_code": "x = 1\n", "feedback": {"speedup": 0.9}}):
        prompt = engine.generator.build_prompt(Proposal(id="p", problem_id="relu", step=0, seed=1, params=params), ctx)
        assert prompt.messages() == [{"role": "system", "content": "You write triton kernels."},
                                     {"role": "user", "content": "Write ModelNew for problem relu.\n"}]
