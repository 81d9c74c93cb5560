"""The evolution search driven in-process over the KNOB_* landscape (search_helpers): selection,
archive cells, migration, edit-type params, determinism, resume from a state_dict, and real search
behaviour (fitness improves over generations, beats random sampling at the same budget)."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
import search_helpers as H

from kforge.api import Candidate, Proposal, code_hash
from kforge.options import RecipeError
from kforge.runtime import protocol as P
from kforge.searches.evolution import Evolution, fitness_of, parse_edit_mix, selection_weights


def make(problems: tuple[str, ...] = ("relu",), seed: int = 0, **options: Any) -> Evolution:
    options.setdefault("features", H.KNOB_FEATURES)
    search = Evolution(**options)
    search.setup(H.context(problems, seed=seed))
    return search


def islands(search: Evolution, pid: str = "relu") -> list[dict[str, Any]]:
    return search.problems[pid]["islands"]


def candidate(proposal: Proposal, code: str, cid: str) -> Candidate:
    return Candidate(id=cid, problem_id=proposal.problem_id, proposal_id=proposal.id, code=code,
                     code_hash=code_hash(code), generator="knobs", parent_id=proposal.parent_id)


# -- pieces ------------------------------------------------------------------------------------------
def test_power_law_favours_rank_and_novelty_favours_unexplored_parents() -> None:
    w = selection_weights([3.0, 2.0, 1.0], [0, 0, 0], method="power-law", alpha=1.0, novelty=1.0)
    assert w == pytest.approx([1.0, 0.5, 1 / 3])
    tied = selection_weights([2.0, 2.0, 1.0], [0, 0, 0], method="power-law", alpha=1.0, novelty=1.0)
    assert tied[0] == tied[1] == 1.0  # equal fitness, equal rank
    # the best parent, used 5 times, gives way to the second, never used
    w = selection_weights([3.0, 2.0], [5, 0], method="power-law", alpha=1.0, novelty=1.0)
    assert w[1] > w[0]
    assert selection_weights([3.0, 2.0], [5, 0], method="power-law", alpha=1.0, novelty=0.0) == [1.0, 0.5]
    s = selection_weights([4.0, 2.0, 1.0, 0.5], [0] * 4, method="sigmoid", alpha=2.0, novelty=1.0)
    assert s == sorted(s, reverse=True) and 0 < s[-1] < s[0] < 1
    assert selection_weights([4.0, 1.0], [1, 0], method="uniform", alpha=1.0, novelty=1.0) == [0.5, 1.0]


def test_selection_counts_follow_the_weights() -> None:
    search = make(exploration=0.0)
    elites = [(f"c{i}", {"fitness": f, "children": 0}) for i, f in enumerate([4.0, 2.0, 1.0, 0.5])]
    rng = random.Random(0)
    picks = Counter(search._select(elites, rng)[0] for _ in range(4000))
    assert picks["c0"] > picks["c1"] > picks["c2"] > picks["c3"] > 0
    elites[0][1]["children"] = 20  # explored a lot: now the second is picked most
    picks = Counter(search._select(elites, rng)[0] for _ in range(4000))
    assert picks.most_common(1)[0][0] == "c1"


def test_edit_mix_is_validated_and_normalised() -> None:
    assert parse_edit_mix({"diff": 3, "tune": 1}) == {"diff": 0.75, "tune": 0.25}
    for bad, message in [({"difff": 1}, "search.edit_mix.difff is not an edit type"),
                         ({"diff": -1}, "must be a number at least 0"),
                         ({"diff": 0}, "at least one edit type")]:
        with pytest.raises(RecipeError, match=message):
            parse_edit_mix(bad)
    with pytest.raises(RecipeError, match="unknown feature"):
        Evolution(features=["nope"])


def test_fitness_is_the_speedup_of_correct_candidates_only() -> None:
    good = H.judge(H.knob_module(H.OPTIMUM))
    assert fitness_of(good) == H.BEST
    assert fitness_of(H.judge(H.knob_module({**H.OPTIMUM, "C": 0}))) == 0.0  # incorrect
    assert fitness_of({"status": P.CORRECT, "speedup_vs_eager": None}) == 0.0  # not timed


def test_archive_keeps_the_fittest_correct_program_per_cell() -> None:
    search = make(islands=1, population=3, generations=2, edit_mix={"diff": 1})
    asked = search.ask(10)
    assert len(asked) == 3 and all(p.params["edit"] == "sample" for p in asked)  # nothing to edit yet
    # same cell (A=6, B=2), different fitness; and one incorrect program
    codes = [H.knob_module({"A": 6, "B": 2, "C": 1, "D": 0}), H.knob_module({"A": 6, "B": 2, "C": 5, "D": 3}),
             H.knob_module({"A": 1, "B": 7, "C": 0, "D": 0})]
    for k, (p, code) in enumerate(zip(asked, codes)):
        search.tell(candidate(p, code, f"c{k}"), p, H.judge(code))
    nxt = search.ask(10)
    isl = islands(search)[0]
    assert isl["generation"] == 1 and isl["archive"] == {"3,1": "c1"}  # the fitter one; the incorrect one not filed
    assert isl["failures"] == ["c2"]  # ...but kept to be repaired
    assert all(p.parent_id == "c1" for p in nxt if p.params["edit"] == "diff")
    assert all(p.params["feedback"]["speedup"] == H.BEST for p in nxt if p.params["edit"] == "diff")


def test_the_archive_fills_distinct_cells() -> None:
    search = make(islands=2, population=4, generations=6)
    H.Driver(search).run()
    for isl in islands(search):
        cells = isl["archive"]
        assert len(cells) >= 5 and len(set(cells.values())) == len(cells)
        for key, cid in cells.items():
            assert isl["programs"][cid]["cell"] == key and isl["programs"][cid]["status"] == P.CORRECT
    m = search.metrics()["problems"]["relu"]["islands"][0]
    assert m["cells"] == len(islands(search)[0]["archive"]) and m["archive_fill"] == m["cells"] / 16


def test_migration_moves_programs_around_the_ring() -> None:
    search = make(islands=3, population=3, generations=6, migration_interval=2, migrants=1)
    d = H.Driver(search).run()
    assert search.problems["relu"]["migrations"] > 0
    made_on: dict[str, set[int]] = {}  # code hash -> the islands whose proposals produced it
    for p in d.proposals:
        if p.id in d.produced:
            made_on.setdefault(d.produced[p.id], set()).add(p.params["island"])
    moved = 0
    for isl in islands(search):
        src = (isl["index"] - 1) % 3
        for rec in isl["programs"].values():
            if rec.get("migrated_from") is not None:
                assert rec["migrated_from"] == src  # only from the ring neighbour
                assert made_on[rec["hash"]] - {isl["index"]}, "a migrant was made on another island"
                moved += 1
    assert moved > 0
    # migrants become parents on their new island: a parent this island never made
    hash_of = {c.id: c.code_hash for c in d.hashes.values()}
    assert any(p.parent_id and p.params["island"] not in made_on[hash_of[p.parent_id]] for p in d.proposals)
    # and only at migration generations: an island waits for its neighbour to reach the generation
    assert all(h["generation"] < 6 for isl in islands(search) for h in isl["best_history"])


def test_edit_types_set_their_params() -> None:
    search = make(islands=1, population=8, generations=4,
                  edit_mix={"diff": 1, "full": 1, "crossover": 1, "tune": 1, "refine": 1})
    d = H.Driver(search).run()
    by_edit: dict[str, list[Proposal]] = {}
    for p in d.proposals:
        by_edit.setdefault(p.params["edit"], []).append(p)
    assert set(by_edit) >= {"sample", "diff", "full", "crossover", "tune", "refine"}
    for p in by_edit["diff"] + by_edit["full"]:
        assert p.params["edit_format"] == p.params["edit"] and p.params["parent_code"]
        assert p.params["feedback"]["status"] == P.CORRECT and "speedup" in p.params["feedback"]
    for p in by_edit["tune"]:
        assert p.params["generator_hint"] == "tune" and p.params["parent_code"] and "inspirations" not in p.params
    for p in by_edit["crossover"]:
        assert p.params["second_parent_code"] != p.params["parent_code"]
        assert p.params["second_parent_id"] != p.parent_id and p.params["edit_format"] == "full"
        codes = [i["code"] for i in p.params["inspirations"]]
        assert p.params["parent_code"] not in codes and p.params["second_parent_code"] not in codes
    for p in by_edit["diff"] + by_edit["crossover"] + by_edit["refine"]:
        for insp in p.params["inspirations"]:
            assert set(insp) == {"code", "speedup"} and insp["code"] != p.params.get("parent_code")
    for p in by_edit["sample"]:
        assert "parent_code" not in p.params and p.parent_id is None


def test_crossover_pairs_parents_from_different_cells() -> None:
    search = make(islands=1, population=6, generations=4, edit_mix={"crossover": 1})
    d = H.Driver(search).run()
    pairs = [p for p in d.proposals if p.params["edit"] == "crossover"]
    assert pairs
    for p in pairs:
        a, b = (H.knobs_of(p.params[k]) for k in ("parent_code", "second_parent_code"))
        assert (a["A"] // 2, a["B"] // 2) != (b["A"] // 2, b["B"] // 2)


def test_refine_edits_repair_failures_with_their_errors_and_lineage() -> None:
    search = make(islands=1, population=6, generations=5, edit_mix={"refine": 1}, refine_turns=2)
    d = H.Driver(search).run()
    repairs = [p for p in d.proposals if p.params["edit"] == "refine"
               and p.params["feedback"]["status"] in (P.INCORRECT, P.COMPILE_ERROR)]
    assert repairs
    for p in repairs:
        fb = p.params["feedback"]
        assert fb.get("mismatch") or fb.get("compile_error")
        assert p.params["edit_format"] == "diff" and p.params["history"][-1]["status"] == fb["status"]
        assert p.params["parent_turn"] < 2  # chains no deeper than refine_turns
    fixed = [p for p in repairs if p.params["feedback"]["status"] == P.INCORRECT]
    assert any(d.results[c.id].status == P.CORRECT for c in d.hashes.values()
               if c.proposal_id in {p.id for p in fixed})


def test_first_generation_samples_or_starts_from_the_example() -> None:
    search = make(islands=2, population=2, seed_from="example")
    asked = search.ask(10)
    example = H.context().problems[0].solutions()["triton"].read_text()
    assert len(asked) == 4 and all(p.params["parent_code"] == example for p in asked)
    assert {p.params["sample"] for p in asked} == {0, 1, 2, 3}  # replay-style sample indices, no gaps


def test_in_flight_cap() -> None:
    search = make(islands=4, population=4, max_in_flight=5)
    first = search.ask(100)
    assert len(first) == 5 and search.ask(100) == []
    p = first[0]
    code = H.knob_module({"A": 1, "B": 1, "C": 1, "D": 1})
    search.tell(candidate(p, code, "c1"), p, H.judge(code))
    assert len(search.ask(100)) == 1


def test_a_duplicate_counts_as_its_original_once_that_is_judged() -> None:
    search = make(islands=1, population=2, generations=3, edit_mix={"diff": 1})
    a, b = search.ask(2)
    code = H.knob_module(H.OPTIMUM)
    original = candidate(a, code, "c1")
    search.tell(original, b, None)  # b's answer duplicates a's, which is still being judged
    assert search.ask(2) == []  # the generation is not complete until the original's verdict is in
    search.tell(original, a, H.judge(code))
    nxt = search.ask(2)
    assert len(nxt) == 2 and islands(search)[0]["archive"] == {"3,1": "c1"}
    assert search.problems["relu"]["duplicates"] == 1


def test_an_exhausted_generator_stops_islands_after_patience() -> None:
    search = make(islands=2, population=3, generations=50, patience=2)
    d = H.Driver(search, gen=lambda p: None).run()
    assert search.done()
    assert len(d.proposals) == 2 * 3  # the first generation is exhausted, then no fresh samples are asked
    assert {isl["stop_reason"] for isl in islands(search)} == {"no new candidates"}


# -- determinism and resume ----------------------------------------------------------------------------
def test_same_seed_same_proposals_whatever_order_results_arrive_in() -> None:
    opts: dict[str, Any] = {"islands": 3, "population": 3, "generations": 6, "migration_interval": 2}
    runs = [H.Driver(make(("relu", "softmax"), seed=5, **opts), order_seed=o, batch=b).run().signature()
            for o, b in [(0, 6), (1, 1), (2, 4), (3, 30)]]
    assert len(runs[0]) == 2 * 3 * 3 * 6
    assert all(r == runs[0] for r in runs[1:])
    other = H.Driver(make(("relu", "softmax"), seed=6, **opts)).run().signature()
    assert other != runs[0]


def test_state_dict_round_trip_mid_run_continues_identically() -> None:
    opts: dict[str, Any] = {"islands": 2, "population": 3, "generations": 5, "migration_interval": 2}
    full = H.Driver(make(seed=2, **opts), order_seed=4).run()

    first = H.Driver(make(seed=2, **opts), order_seed=4)
    for _ in range(7):
        first.step()
    assert first.pending and not first.search.done()  # mid-generation, proposals in flight
    state = json.loads(json.dumps(first.search.state_dict()))  # what the store holds
    resumed = make(seed=2, **opts)
    resumed.load_state_dict(state)
    second = H.Driver(resumed, order_seed=9)
    second.proposals, second.pending = list(first.proposals), list(first.pending)
    second.hashes, second.seq, second.results = dict(first.hashes), first.seq, dict(first.results)
    second.run()
    assert second.signature() == full.signature()
    def outcome(search: Evolution) -> list[Any]:  # candidate ids follow arrival order: compare the rest
        return [(i["generation"], i["best"], i["cells"], i["stopped"])
                for i in search.metrics()["problems"]["relu"]["islands"]]

    assert outcome(resumed) == outcome(full.search)


# -- search behaviour ----------------------------------------------------------------------------------
def best_by_generation(search: Evolution) -> list[float]:
    hist = [h["best"] or 0.0 for h in islands(search)[0]["best_history"]]
    for isl in islands(search)[1:]:
        hist = [max(a, b["best"] or 0.0) for a, b in zip(hist, isl["best_history"])]
    return hist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evolution_climbs_towards_the_known_optimum(seed: int) -> None:
    search = make(seed=seed, islands=3, population=4, generations=12)
    d = H.Driver(search, order_seed=seed).run()
    curve = best_by_generation(search)
    assert curve == sorted(curve)  # elitist: the best never gets worse
    assert curve[-1] > curve[0] and curve[-1] >= 0.8 * H.BEST
    assert max(r.speedup or 0 for r in d.results.values()) == curve[-1]


def test_evolution_beats_random_sampling_at_the_same_budget() -> None:
    wins = 0
    for seed in range(4):
        evo = make(seed=seed, islands=3, population=4, generations=10)
        rnd = make(seed=seed, islands=3, population=4, generations=10, edit_mix={"sample": 1})
        e, r = H.Driver(evo).run(), H.Driver(rnd).run()
        assert len(e.proposals) == len(r.proposals) == 120
        best_e = max(x.speedup or 0 for x in e.results.values())
        best_r = max(x.speedup or 0 for x in r.results.values())
        wins += best_e > best_r
    assert wins >= 3
