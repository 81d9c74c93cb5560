"""The buffer of start states and the PUCT rule that picks which ones the next groups start from.

Standard library only. A *state* is a problem on its own (a root: write a kernel from scratch) or a
problem plus an earlier candidate to improve. After a group of rollouts from a state, the state's
``m`` (the best reward any rollout from it earned: a maximum, not a mean) is updated, and the visit
count ``n`` of the state and of every ancestor grows by one; ``T`` counts groups.

The score of state ``i`` (as TTT-Discover's ``PUCTSampler``)::

    score(i) = Q(i) + c * scale * P(i) * sqrt(1 + T) / (1 + n(i))
    Q(i) = m(i) if n(i) > 0 else value(i)

``P`` is a rank prior over the states' own values (the best gets the most), ``scale`` the spread of
values among non-root states. High maximum reward and few visits both raise a score. When several
groups start in one step, a state's whole lineage (ancestors and descendants) is blocked after it is
picked, so the step spreads over different branches; if every state is blocked, the best scores are
reused in order.

New children enter the buffer after each step: at most ``children_per_parent`` per parent per step
(the best by value), never twice the same code (by hash), and past ``max_size`` the lowest-valued
non-root states are dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class State:
    id: str
    problem_id: str
    code: str | None = None  # None: a root (the problem alone)
    value: float | None = None  # the state's own reward; None for a root
    speedup: float | None = None
    feedback: dict[str, Any] | None = None  # what the prompt shows about this candidate
    parents: list[str] = field(default_factory=list)  # parent first, then its ancestors
    step: int = -1  # the TTT step that produced it (-1: a root)
    code_hash: str | None = None
    candidate_id: str | None = None

    @property
    def is_root(self) -> bool:
        return self.code is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        return cls(**data)


@dataclass
class Scored:
    state: State
    score: float
    q: float
    prior: float
    bonus: float
    n: int


def root_id(problem_id: str) -> str:
    return f"root:{problem_id}"


class PUCTBuffer:
    def __init__(self, c: float = 1.0, max_size: int = 1000, children_per_parent: int = 2,
                 root_value: float = 0.0) -> None:
        self.c = float(c)
        self.max_size = int(max_size)
        self.children_per_parent = int(children_per_parent)
        self.root_value = float(root_value)
        self.states: dict[str, State] = {}
        self.n: dict[str, int] = {}
        self.m: dict[str, float] = {}
        self.T = 0

    # -- contents -------------------------------------------------------------------------------
    def add_root(self, problem_id: str) -> State:
        sid = root_id(problem_id)
        if sid not in self.states:
            self.states[sid] = State(id=sid, problem_id=problem_id)
        return self.states[sid]

    def value(self, state: State) -> float:
        return self.root_value if state.value is None else float(state.value)

    def __len__(self) -> int:
        return len(self.states)

    def __contains__(self, sid: str) -> bool:
        return sid in self.states

    def get(self, sid: str) -> State:
        return self.states[sid]

    # -- scoring and selection ------------------------------------------------------------------
    def scores(self, problem_id: str | None = None) -> list[Scored]:
        """Every state (of ``problem_id`` if given) with its PUCT score, best first (ties: higher
        value, then insertion order)."""
        pool = [s for s in self.states.values() if problem_id is None or s.problem_id == problem_id]
        if not pool:
            return []
        values = [self.value(s) for s in pool]
        non_root = [v for s, v in zip(pool, values) if not s.is_root]
        spread = (max(non_root) - min(non_root)) if non_root else 0.0
        scale = max(spread, 1e-6) if non_root else 1.0
        # rank prior: the best value gets weight N, the worst 1 (ties share the better rank)
        order = sorted(range(len(pool)), key=lambda i: -values[i])
        ranks = [0] * len(pool)
        for r, i in enumerate(order):
            ranks[i] = r
        weights = [len(pool) - ranks[i] for i in range(len(pool))]
        total = float(sum(weights))
        sqrt_t = math.sqrt(1.0 + self.T)
        out = []
        for i, s in enumerate(pool):
            n = self.n.get(s.id, 0)
            q = self.m.get(s.id, values[i]) if n > 0 else values[i]
            prior = weights[i] / total
            bonus = self.c * scale * prior * sqrt_t / (1.0 + n)
            out.append(Scored(s, q + bonus, q, prior, bonus, n))
        index = {s.id: i for i, s in enumerate(pool)}
        out.sort(key=lambda x: (-x.score, -self.value(x.state), index[x.state.id]))
        return out

    def lineage(self, state: State) -> set[str]:
        """The state, its ancestors and its descendants in the buffer."""
        ids = {state.id, *state.parents}
        for other in self.states.values():
            if state.id in other.parents:
                ids.add(other.id)
        return ids

    def select(self, k: int, problem_id: str | None = None, block_lineage: bool = True) -> list[Scored]:
        ranked = self.scores(problem_id)
        if not ranked or k <= 0:
            return []
        picked: list[Scored] = []
        blocked: set[str] = set()
        for entry in ranked:
            if len(picked) >= k:
                break
            if block_lineage and entry.state.id in blocked:
                continue
            picked.append(entry)
            if block_lineage:
                blocked |= self.lineage(entry.state)
        i = 0
        while len(picked) < k:  # everything blocked: reuse the best in order
            picked.append(ranked[i % len(ranked)])
            i += 1
        return picked

    # -- updates --------------------------------------------------------------------------------
    def record_group(self, state_id: str, rewards: list[float]) -> None:
        """A group of rollouts from ``state_id`` finished with these rewards (failures included)."""
        if not rewards:
            return
        best = max(rewards)
        self.m[state_id] = max(self.m.get(state_id, best), best)
        state = self.states.get(state_id)
        for sid in [state_id, *(state.parents if state else [])]:
            self.n[sid] = self.n.get(sid, 0) + 1
        self.T += 1

    def add_children(self, children: list[State]) -> list[State]:
        """Add this step's children (each with ``parents`` set); returns those that were kept."""
        by_parent: dict[str, list[State]] = {}
        for child in children:
            by_parent.setdefault(child.parents[0] if child.parents else "", []).append(child)
        hashes = {s.code_hash for s in self.states.values() if s.code_hash}
        added: list[State] = []
        for group in by_parent.values():
            group.sort(key=lambda s: -self.value(s))
            kept = 0
            for child in group:
                if self.children_per_parent and kept >= self.children_per_parent:
                    break
                if child.id in self.states or (child.code_hash and child.code_hash in hashes):
                    continue
                self.states[child.id] = child
                if child.code_hash:
                    hashes.add(child.code_hash)
                added.append(child)
                kept += 1
        self._evict()
        return added

    def _evict(self) -> None:
        if len(self.states) <= self.max_size:
            return
        roots = [s for s in self.states.values() if s.is_root]
        rest = sorted((s for s in self.states.values() if not s.is_root), key=lambda s: -self.value(s))
        keep = {s.id for s in roots} | {s.id for s in rest[: max(0, self.max_size - len(roots))]}
        self.states = {sid: s for sid, s in self.states.items() if sid in keep}

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"states": [s.to_dict() for s in self.states.values()], "n": dict(self.n), "m": dict(self.m),
                "T": self.T}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.states = {d["id"]: State.from_dict(d) for d in data.get("states", [])}
        self.n = {k: int(v) for k, v in (data.get("n") or {}).items()}
        self.m = {k: float(v) for k, v in (data.get("m") or {}).items()}
        self.T = int(data.get("T") or 0)

    def stats(self) -> dict[str, Any]:
        values = [s.value for s in self.states.values() if s.value is not None]
        return {"buffer_size": len(self.states), "buffer_best": max(values) if values else None, "puct_T": self.T}
