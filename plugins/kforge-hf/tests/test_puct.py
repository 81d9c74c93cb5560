"""The buffer of start states and the PUCT rule (pure Python)."""

from __future__ import annotations

import json
import math

import pytest

from kforge_hf.puct import PUCTBuffer, State, root_id


def child(sid: str, value: float, parents: list[str], code_hash: str | None = None, problem: str = "relu") -> State:
    return State(id=sid, problem_id=problem, code=f"# {sid}\n", value=value, parents=parents,
                 code_hash=code_hash or f"h-{sid}", candidate_id=sid)


def test_a_fresh_buffer_starts_every_group_at_the_root() -> None:
    buf = PUCTBuffer()
    buf.add_root("relu")
    picks = buf.select(4, "relu")
    assert [p.state.id for p in picks] == [root_id("relu")] * 4
    assert picks[0].state.is_root


def test_score_formula() -> None:
    buf = PUCTBuffer(c=1.5)
    root = buf.add_root("relu")
    buf.add_children([child("a", 1.0, [root.id]), child("b", 0.4, [root.id])])
    buf.record_group("a", [0.0, 2.0, 0.5])  # a's best child earned 2.0
    scored = {s.state.id: s for s in buf.scores("relu")}
    # values: root 0 (failure), a 1.0, b 0.4 -> ranks a 0, b 1, root 2 -> weights 3, 2, 1
    scale = 1.0 - 0.4
    t = buf.T  # 1
    a = scored["a"]
    assert a.n == 1 and a.q == pytest.approx(2.0)  # visited: Q is the best child's reward, not a's own value
    assert a.prior == pytest.approx(3 / 6)
    assert a.score == pytest.approx(2.0 + 1.5 * scale * (3 / 6) * math.sqrt(1 + t) / (1 + 1))
    b = scored["b"]
    assert b.n == 0 and b.q == pytest.approx(0.4)  # unvisited: its own value
    assert b.score == pytest.approx(0.4 + 1.5 * scale * (2 / 6) * math.sqrt(1 + t) / 1)
    r = scored[root_id("relu")]
    assert r.n == 1  # a's group counts as a visit of every ancestor


def test_prefers_a_higher_maximum_over_a_higher_mean() -> None:
    buf = PUCTBuffer(c=0.0)  # no exploration: Q alone decides
    root = buf.add_root("relu")
    buf.add_children([child("steady", 0.5, [root.id]), child("spiky", 0.5, [root.id])])
    buf.record_group("steady", [0.8, 0.8, 0.8, 0.8])  # mean 0.8, max 0.8
    buf.record_group("spiky", [0.0, 0.0, 0.0, 1.5])  # mean 0.375, max 1.5
    assert buf.select(1, "relu")[0].state.id == "spiky"


def test_prefers_an_under_visited_state_of_equal_merit() -> None:
    buf = PUCTBuffer(c=1.0)
    root = buf.add_root("relu")
    buf.add_children([child("x", 1.0, [root.id]), child("y", 1.0, [root.id])])
    for _ in range(5):
        buf.record_group("x", [1.0])
    buf.record_group("y", [1.0])
    scored = {s.state.id: s for s in buf.scores("relu")}
    assert scored["x"].q == scored["y"].q
    assert scored["y"].score > scored["x"].score
    assert buf.select(1, "relu")[0].state.id == "y"


def test_exploration_shrinks_with_visits() -> None:
    buf = PUCTBuffer(c=2.0)
    root = buf.add_root("relu")
    buf.add_children([child("x", 1.0, [root.id]), child("y", 0.0, [root.id])])
    before = {s.state.id: s.bonus for s in buf.scores("relu")}["x"]
    for _ in range(3):
        buf.record_group("x", [0.5])
    after = {s.state.id: s.bonus for s in buf.scores("relu")}["x"]
    # sqrt(1 + T) / (1 + n): T 0 -> 3, n 0 -> 3
    assert after == pytest.approx(before * math.sqrt(4) / 4)


def test_lineage_blocking_spreads_a_step_over_branches_then_reuses() -> None:
    buf = PUCTBuffer(c=0.0)
    root = buf.add_root("relu")
    buf.add_children([child("a", 3.0, [root.id]), child("b", 1.0, [root.id])])
    buf.add_children([child("a1", 2.0, ["a", root.id])])
    picks = [p.state.id for p in buf.select(3, "relu")]
    # a is best; a1 (a's child) and the root (a's ancestor) are blocked, so b comes next; then reuse
    assert picks[:2] == ["a", "b"]
    assert picks[2] == "a"
    assert [p.state.id for p in buf.select(3, "relu", block_lineage=False)] == ["a", "a1", "b"]


def test_states_are_chosen_per_problem() -> None:
    buf = PUCTBuffer()
    buf.add_root("relu")
    buf.add_root("softmax")
    buf.add_children([child("s1", 5.0, [root_id("softmax")], problem="softmax")])
    assert {p.state.problem_id for p in buf.select(2, "relu")} == {"relu"}
    assert buf.select(1, "softmax")[0].state.id == "s1"


def test_children_top_k_per_parent_dedup_and_eviction() -> None:
    buf = PUCTBuffer(max_size=4, children_per_parent=2)
    root = buf.add_root("relu")
    added = buf.add_children([child("a", 0.1, [root.id]), child("b", 0.9, [root.id]), child("c", 0.5, [root.id])])
    assert sorted(s.id for s in added) == ["b", "c"]  # the best two of three
    again = buf.add_children([child("d", 2.0, ["b", root.id], code_hash="h-c")])
    assert again == []  # same code as c: not a new state
    buf.add_children([child("e", 3.0, ["b", root.id]), child("f", 0.2, ["c", root.id])])
    assert len(buf) == 4
    assert root.id in buf and "e" in buf and "b" in buf and "f" not in buf  # the root always stays
    buf.add_children([child("g", 0.0, ["e", "b", root.id])])
    assert "g" not in buf  # the worst is dropped first


def test_record_group_updates_max_and_visits_of_ancestors() -> None:
    buf = PUCTBuffer()
    root = buf.add_root("relu")
    buf.add_children([child("a", 1.0, [root.id])])
    buf.add_children([child("a1", 1.2, ["a", root.id])])
    buf.record_group("a1", [0.3, 0.9])
    buf.record_group("a1", [0.1])
    assert buf.m["a1"] == pytest.approx(0.9)  # a maximum, never lowered
    assert buf.n == {"a1": 2, "a": 2, root.id: 2}
    assert buf.T == 2
    buf.record_group("a1", [])
    assert buf.T == 2  # an empty group (all left out) changes nothing


def test_state_dict_round_trips_through_json() -> None:
    buf = PUCTBuffer(c=0.7)
    root = buf.add_root("relu")
    buf.add_children([child("a", 1.0, [root.id]), child("b", 0.3, [root.id])])
    buf.record_group("a", [0.5, 1.5])
    data = json.loads(json.dumps(buf.state_dict()))
    other = PUCTBuffer(c=0.7)
    other.load_state_dict(data)
    assert [(s.state.id, s.score) for s in other.scores()] == [(s.state.id, s.score) for s in buf.scores()]
    assert other.states["a"] == buf.states["a"]
