"""Checkpoint and resume with the real generator: the state the engine stores points at a
checkpoint; a new generator and search (a restarted process) load it and carry on exactly as the
uninterrupted run does, between steps and in the middle of one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from helpers import Driver, verdict  # noqa: E402

from kforge_hf.ttt import TTTSearch  # noqa: E402

OPTS = {"steps": 4, "groups": 2, "rollouts": 6, "advantage": "entropic_adaptive", "reward": "linear",
        "learning_rate": 0.02, "puct_c": 1.0}


def judge(code: str, cid: str, pid: str) -> Any:
    # any answer starting with 'a' is correct, faster the more 'a's follow: states to build on
    if code.startswith("a"):
        r = verdict(code, cid, pid, "a")
        r.speedup_vs_eager = 1.0 + code.count("a")
        return r
    return verdict(code, cid, pid, "a")


def start(make_generator: Any, make_ctx: Any, run_dir: Path) -> tuple[Any, TTTSearch, Driver]:
    gen = make_generator(max_new_tokens=3)
    ctx = make_ctx(run_dir)
    ctx.generator = gen  # as the engine lends it (see docs/ttt.md)
    search = TTTSearch(**OPTS)
    search.setup(ctx)
    return gen, search, Driver(search, gen, ctx, judge)


def same_adapter(a: Any, b: Any, atol: float = 0.0) -> bool:
    sa, sb = a.adapter_state(), b.adapter_state()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol, rtol=0) for k in sa)


def test_resume_between_steps_continues_like_the_uninterrupted_run(make_generator: Any, make_ctx: Any,
                                                                   tmp_path: Path) -> None:
    gen, search, driver = start(make_generator, make_ctx, tmp_path / "run")
    driver.step()
    driver.step()
    assert len(search.buffer) > 1  # correct candidates became start states
    assert search.buffer.T == 4  # two steps of two groups
    state = json.loads(json.dumps(search.state_dict()))  # what the engine stored
    assert state["checkpoint"] == "ttt/step-0001" and state["step"] == 2 and state["round"] is None
    ck = tmp_path / "run" / "ttt" / "step-0001"
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "optimizer.pt", "policy.json",
                 "search.json"):
        assert (ck / name).is_file(), name

    # a restarted process: new generator, new search, the stored state
    gen2, search2, driver2 = start(make_generator, make_ctx, tmp_path / "run")
    search2.load_state_dict(state)
    assert search2.step == 2 and search2.history == search.history
    assert search2.buffer.state_dict() == search.buffer.state_dict()
    assert search2.cands == search.cands
    assert same_adapter(gen, gen2)
    assert gen2.adapter_version == gen.adapter_version == 2
    o1, o2 = gen.policy.optimizer.state_dict(), gen2.policy.optimizer.state_dict()
    assert o1["state"].keys() == o2["state"].keys()
    assert all(torch.equal(o1["state"][i]["exp_avg_sq"], o2["state"][i]["exp_avg_sq"]) for i in o1["state"])

    driver2.by_hash, driver2.seq = dict(driver.by_hash), driver.seq  # the store's dedup survives a restart
    p1, p2 = search.ask(100), search2.ask(100)
    assert [(p.id, p.seed, p.params) for p in p1] == [(p.id, p.seed, p.params) for p in p2]
    assert any("parent_code" in p.params for p in p1)  # groups start from earlier candidates too
    for p, g in zip(p1, driver.generate(p1)):
        driver.tell(p, g)
    for p, g in zip(p2, driver2.generate(p2)):
        driver2.tell(p, g)
    m1, m2 = search.history[-1], search2.history[-1]
    for key in ("reward_mean", "reward_max", "correct_rate", "best_speedup", "trained_rollouts"):
        assert m1[key] == m2[key], key
    assert m1["loss"] == pytest.approx(m2["loss"], abs=1e-5)
    assert same_adapter(gen, gen2, atol=1e-5)
    assert gen2.adapter_version == 3


def test_resume_in_the_middle_of_a_step(make_generator: Any, make_ctx: Any, tmp_path: Path) -> None:
    gen, search, driver = start(make_generator, make_ctx, tmp_path / "run")
    driver.step()
    proposals = driver.ask_all()
    gens = driver.generate(proposals)
    half = len(proposals) // 2
    for p, g in zip(proposals[:half], gens[:half]):
        driver.tell(p, g)
    state = json.loads(json.dumps(search.state_dict()))
    assert state["round"]["asked"] == len(proposals) and len(state["round"]["rewards"]) == half
    rollouts = sorted(f.name for f in (tmp_path / "run" / "ttt" / "rollouts").glob("*.json"))
    assert len(rollouts) >= len(proposals)  # every sample of the step is on disk

    gen2, search2, driver2 = start(make_generator, make_ctx, tmp_path / "run")
    search2.load_state_dict(state)
    driver2.by_hash, driver2.seq = dict(driver.by_hash), driver.seq
    assert search2.ask(100) == []  # the step was fully asked; the engine redoes what was unfinished
    for p, g in zip(proposals[half:], gens[half:]):
        driver.tell(p, g)  # the uninterrupted run
        driver2.tell(p, g)  # the resumed one: the first half's samples come back from disk
    assert len(search.history) == len(search2.history) == 2
    assert search2.history[-1]["trained_rollouts"] == search.history[-1]["trained_rollouts"] > 0
    assert same_adapter(gen, gen2, atol=1e-5)
    assert search2.buffer.state_dict() == search.buffer.state_dict()
    driver.step()
    driver2.step()
    assert same_adapter(gen, gen2, atol=1e-5)
