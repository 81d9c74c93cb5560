"""The ttt search's bookkeeping with a stand-in generator (no model): proposals and seeds, rewards
of duplicates and failures, advantages handed to train_step, the buffer, figures, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from kforge.api import Candidate, RunContext, derive_seed
from kforge.backends.triton import TritonBackend
from kforge.options import RecipeError
from kforge.problems import builtin_problems
from kforge.runtime import protocol as P

from kforge_hf.advantages import entropic, leave_one_out, solve_beta
from kforge_hf.ttt import TTTSearch


class FakeGenerator:
    """Records train_step batches; checkpoints are a JSON file."""

    name = "fake"

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.version = 0
        self.loaded_from: Path | None = None
        self.forgotten: list[str] = []

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.batches.append(batch)
        self.version += 1
        return {"loss": 0.5, "kl": 0.01, "kl_old": 0.0, "lr": batch["lr"], "grad_norm": 1.0, "clip_fraction": 0.0,
                "adapter_version": self.version}

    def save_checkpoint(self, folder: Path) -> None:
        (Path(folder) / "fake.json").write_text(json.dumps({"version": self.version}))

    def load_checkpoint(self, folder: Path) -> None:
        self.loaded_from = Path(folder)
        self.version = json.loads((Path(folder) / "fake.json").read_text())["version"]

    def forget_rollouts(self, ids: list[str]) -> None:
        self.forgotten.extend(ids)


def make(tmp_path: Path | None, gen: FakeGenerator, ids: tuple[str, ...] = ("relu",), **opts: Any) -> TTTSearch:
    problems = [p for p in builtin_problems() if p.id in ids]
    ctx = RunContext(seed=3, problems=problems, backend=TritonBackend(), recipe={}, run_dir=tmp_path)
    ctx.generator = gen  # what the engine would lend (see docs/ttt.md)
    search = TTTSearch(**{"steps": 3, "groups": 2, "rollouts": 4, **opts})
    search.setup(ctx)
    return search


def cand(cid: str, proposal: Any, code: str | None = None) -> Candidate:
    code = code or f"# {cid}\n"
    return Candidate(id=cid, problem_id=proposal.problem_id, proposal_id=proposal.id, code=code,
                     code_hash=f"h-{code}", generator="fake")


def correct(cid: str, speedup: float) -> P.EvalResult:
    return P.EvalResult(cid, "relu", P.CORRECT, speedup_vs_eager=speedup, timing={"median_ms": 1 / speedup},
                        baseline_eager={"median_ms": 1.0})


def test_needs_a_generator_with_train_step() -> None:
    ctx = RunContext(seed=0, problems=builtin_problems()[:1], backend=TritonBackend(), recipe={})
    ctx.generator = object()
    with pytest.raises(RecipeError, match="train_step"):
        TTTSearch(steps=1).setup(ctx)


def test_proposals_of_a_step() -> None:
    search = make(None, FakeGenerator())
    first = search.ask(3)
    rest = search.ask(100)
    props = first + rest
    assert len(first) == 3 and len(props) == 8
    assert search.ask(5) == []  # the step waits for its verdicts
    assert [p.id for p in props] == [f"ttt0000-g{g:02d}-k{k:02d}" for g in range(2) for k in range(4)]
    assert all(p.seed == derive_seed(3, "ttt", 0, p.params["group"], p.params["sample"]) for p in props)
    assert len({p.seed for p in props}) == 8
    assert all(p.params["state"] == "root:relu" and "parent_code" not in p.params for p in props)
    assert all(p.params["temperature"] == 1.0 for p in props)
    json.dumps(search.state_dict())  # the engine stores it as JSON after every ask and tell


def test_a_step_trains_with_the_chosen_advantages_and_grows_the_buffer(tmp_path: Path) -> None:
    gen = FakeGenerator()
    search = make(tmp_path, gen, advantage="loo", reward="linear", learning_rate=1e-3, clip_eps=0.1)
    props = search.ask(100)
    g0, g1 = props[:4], props[4:]
    # group 0: two correct kernels, a duplicate of the faster one, a failure with no code
    search.tell(cand("c1", g0[0], "fast"), g0[0], correct("c1", 2.0))
    search.tell(cand("c2", g0[1], "slow"), g0[1], correct("c2", 0.5))
    search.tell(cand("c1", g0[0], "fast"), g0[2], None)
    search.tell(None, g0[3], P.EvalResult(g0[3].id, "relu", P.COMPILE_ERROR, guard="no_code"))
    # group 1: all wrong but one infrastructure failure (left out of training)
    for i, p in enumerate(g1[:3]):
        search.tell(cand(f"w{i}", p), p, P.EvalResult(f"w{i}", "relu", P.INCORRECT))
    assert gen.batches == []
    search.tell(cand("x", g1[3]), g1[3], P.EvalResult("x", "relu", P.INFRA_ERROR))
    (batch,) = gen.batches
    # group 1 is constant (all 0): skipped; group 0 trains with leave-one-out advantages of [2, .5, 2, 0]
    assert batch["rollout_ids"] == [p.id for p in g0]
    assert batch["advantages"] == pytest.approx(leave_one_out([2.0, 0.5, 2.0, 0.0]))
    assert batch["lr"] == 1e-3 and batch["clip_eps"] == 0.1 and batch["kl_coef"] == 0.0
    m = search.history[-1]
    assert m["step"] == 0 and m["rollouts"] == 8 and m["excluded"] == 1
    assert m["reward_max"] == 2.0 and m["reward_mean"] == pytest.approx(4.5 / 7)
    assert m["correct_rate"] == pytest.approx(3 / 8)  # c1, c2 and c1's duplicate
    assert m["best_speedup"] == 2.0 and m["kl"] == 0.01 and m["loss"] == 0.5 and m["lr"] == 1e-3
    assert m["trained_rollouts"] == 4 and m["new_states"] == 2
    # the buffer: c1 and c2 are states now, and the next step starts groups from them
    assert {"c1", "c2"} <= set(search.buffer.states)
    assert search.buffer.m["root:relu"] == 2.0
    nxt = search.ask(100)
    starts = {p.params["state"] for p in nxt}
    assert "c1" in starts
    p = next(p for p in nxt if p.params["state"] == "c1")
    assert p.params["parent_code"] == "fast" and p.parent_id == "c1"
    assert p.params["feedback"]["speedup"] == 2.0 and p.params["feedback"]["time_ms"] == 0.5
    # checkpoint on disk, pointed at by the state
    state = search.state_dict()
    assert state["checkpoint"] == "ttt/step-0000"
    assert (tmp_path / "ttt" / "step-0000" / "search.json").is_file()
    assert (tmp_path / "ttt" / "step-0000" / "fake.json").is_file()
    assert json.loads((tmp_path / "ttt" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 0
    assert search.metrics()["step"] == 1 and search.metrics()["best_speedup"] == 2.0


def test_a_duplicate_waits_for_its_original(tmp_path: Path) -> None:
    gen = FakeGenerator()
    search = make(tmp_path, gen, groups=1, rollouts=3, advantage="mean", reward="linear")
    a, b, c = search.ask(10)
    search.tell(cand("c1", a), b, None)  # b duplicates c1, whose verdict has not come yet
    search.tell(cand("c9", c), c, P.EvalResult("c9", "relu", P.INCORRECT))
    assert gen.batches == [] and search.round["pending"] == {b.id: "c1"}
    json.dumps(search.state_dict())
    search.tell(cand("c1", a), a, correct("c1", 1.5))
    (batch,) = gen.batches
    assert dict(zip(batch["rollout_ids"], batch["advantages"])) == pytest.approx(
        {a.id: 0.5, b.id: 0.5, c.id: -1.0})


def test_entropic_adaptive_is_the_default_estimator() -> None:
    gen = FakeGenerator()
    search = make(None, gen, groups=1, rollouts=4, reward="linear")
    props = search.ask(10)
    speeds = [1.0, 3.0, 0.5, 2.0]
    for i, (p, s) in enumerate(zip(props, speeds)):
        search.tell(cand(f"c{i}", p), p, correct(f"c{i}", s))
    beta = solve_beta(speeds, math.log(2))
    assert gen.batches[0]["advantages"] == pytest.approx(entropic(speeds, beta))
    assert search.history[-1]["beta_mean"] == pytest.approx(beta)


def test_reuse_false_always_starts_from_the_problem(tmp_path: Path) -> None:
    gen = FakeGenerator()
    search = make(tmp_path, gen, groups=2, rollouts=2, reuse=False, reward="linear")
    for i, p in enumerate(search.ask(10)):
        search.tell(cand(f"c{i}", p), p, correct(f"c{i}", 1.0 + i))
    assert all(p.params["state"] == "root:relu" for p in search.ask(10))


def test_groups_cycle_over_problems() -> None:
    search = make(None, FakeGenerator(), ids=("relu", "softmax"), groups=4, rollouts=1)
    props = search.ask(10)
    assert [p.problem_id for p in props] == ["relu", "softmax", "relu", "softmax"]
    assert {p.params["state"] for p in props} == {"root:relu", "root:softmax"}


def test_resume_from_state_dict_mid_step(tmp_path: Path) -> None:
    gen = FakeGenerator()
    search = make(tmp_path, gen, groups=1, rollouts=2, reward="linear", advantage="mean")
    a, b = search.ask(10)
    search.tell(cand("c1", a), a, correct("c1", 2.0))
    search.tell(cand("c2", b), b, correct("c2", 1.0))  # step 0 done and checkpointed
    c, d = search.ask(10)
    search.tell(cand("c3", c), c, correct("c3", 4.0))  # step 1 half told
    state = json.loads(json.dumps(search.state_dict()))
    gen2 = FakeGenerator()
    again = make(tmp_path, gen2, groups=1, rollouts=2, reward="linear", advantage="mean")
    again.load_state_dict(state)
    assert gen2.loaded_from == tmp_path / "ttt" / "step-0000" and gen2.version == 1
    assert again.step == 1 and set(again.buffer.states) == set(search.buffer.states)
    assert again.buffer.state_dict() == search.buffer.state_dict()
    assert again.ask(10) == []  # step 1 was fully asked before the restart
    again.tell(cand("c4", d), d, correct("c4", 1.0))
    assert gen2.batches[0]["rollout_ids"] == [c.id, d.id]
    assert gen2.batches[0]["advantages"] == pytest.approx([1.5, -1.5])
    assert "c3" in again.buffer.states  # its code came back from ttt/codes/
    assert again.buffer.states["c3"].code == "# c3\n"
    assert [m["step"] for m in again.history] == [0, 1]


def test_done_after_the_last_step(tmp_path: Path) -> None:
    gen = FakeGenerator()
    search = make(tmp_path, gen, steps=2, groups=1, rollouts=2, reward="linear", keep_checkpoints=2)
    n = 0
    while not search.done():
        for p in search.ask(10):
            n += 1
            search.tell(cand(f"c{n}", p), p, correct(f"c{n}", float(n)))
    assert search.step == 2 and search.ask(10) == []
    assert sorted(p.name for p in (tmp_path / "ttt").glob("step-*")) == ["step-0000", "step-0001"]
    assert gen.forgotten == ["ttt0000-g00-k00", "ttt0000-g00-k01"]  # the step before the latest
