"""The refine search driven in-process: what goes back to the generator each turn, bounded history,
early stopping, duplicates, determinism and resume; and the helpers evolution shares."""

from __future__ import annotations

import json
from typing import Any

import search_helpers as H

from kforge.api import Candidate, Proposal, code_hash
from kforge.runtime import protocol as P
from kforge.searches.refine import Refine, feedback_from_result, history_entry, refine_params

BROKEN = H.knob_module({"A": 9, "B": 1, "C": 1, "D": 1})  # compile error
WRONG = H.knob_module({"A": 1, "B": 1, "C": 0, "D": 1})  # incorrect
SLOW = H.knob_module({"A": 1, "B": 1, "C": 1, "D": 1})
BETTER = H.knob_module({"A": 4, "B": 2, "C": 4, "D": 2})
BEST = H.knob_module(H.OPTIMUM)


def make(problems: tuple[str, ...] = ("relu",), seed: int = 0, **options: Any) -> Refine:
    search = Refine(**options)
    search.setup(H.context(problems, seed=seed))
    return search


def scripted(*codes: str | None, per_chain: dict[int, list[str | None]] | None = None) -> Any:
    """A generator answering turn t of a chain with codes[t] (or per_chain[chain][t])."""
    def gen(p: Proposal) -> str | None:
        script = (per_chain or {}).get(p.params["chain"], list(codes))
        return script[min(p.params["turn"], len(script) - 1)]
    return gen


def test_feedback_from_results() -> None:
    compile_error = P.EvalResult("c1", "relu", P.COMPILE_ERROR, error="SyntaxError: invalid syntax (line 3)",
                                 log_tail="  File candidate.py, line 3\n    def f(:\n")
    fb = feedback_from_result(compile_error)
    assert fb["status"] == P.COMPILE_ERROR and "invalid syntax" in fb["compile_error"]
    assert "def f(:" in fb["compile_error"] and "speedup" not in fb
    wrong = feedback_from_result(H.judge(WRONG))
    assert wrong == {"status": P.INCORRECT, "mismatch": "output differs at [0, 3]: 1.5 vs 0.0"}
    good = feedback_from_result(H.judge(BEST))
    assert good["status"] == P.CORRECT and good["speedup"] == H.BEST and good["time_ms"] == 0.25
    assert good["baseline_ms"] == 1.0 and good["roofline_fraction"] == H.BEST / 8
    rejected = feedback_from_result(P.EvalResult("c", "relu", P.REJECTED, guard="needs-kernel", error="no kernel"))
    assert rejected["error"] == "no kernel (check: needs-kernel)"
    long = feedback_from_result(P.EvalResult("c", "relu", P.RUNTIME_ERROR, error="x" * 10_000))
    assert len(long["error"]) < 2100 and "characters cut" in long["error"]
    assert feedback_from_result(H.judge(BEST).to_dict()) == good  # a dict works too


def test_refine_params_keep_only_the_latest_parent_and_a_short_history() -> None:
    history = [history_entry(t, f"c{t}", {"status": P.COMPILE_ERROR, "compile_error": f"error {t}\nmore"})
               for t in range(5)]
    params = refine_params("code", {"status": P.INCORRECT}, history, edit_format="diff", history_turns=2)
    assert params["parent_code"] == "code" and params["edit_format"] == "diff"
    assert [h["turn"] for h in params["history"]] == [3, 4]
    assert params["history"][-1]["summary"] == "turn 4: compile_error: error 4"  # no candidate id in prompts
    assert refine_params(None, None, [], history_turns=2) == {}


def test_a_compile_error_goes_back_with_the_failed_code_then_the_chain_stops_when_not_improving() -> None:
    search = make(turns=6, patience=1)
    d = H.Driver(search, gen=scripted(BROKEN, SLOW, SLOW.replace("KNOB_D = 1", "KNOB_D = 1  # same"), BETTER))
    d.run()
    ps = d.proposals
    assert [p.params["turn"] for p in ps] == [0, 1, 2]
    assert "parent_code" not in ps[0].params and "feedback" not in ps[0].params
    assert ps[1].params["parent_code"] == BROKEN and ps[1].parent_id == "c0001"
    assert "knob out of range" in ps[1].params["feedback"]["compile_error"]
    assert ps[2].params["feedback"]["status"] == P.CORRECT  # turn 1 fixed it
    # turn 2 repeated turn 1 (a comment differs): not judged again, and not improving: the chain stops
    assert len(d.judged) == 2 and search.done()
    chain = search.chains["relu:c0"]
    assert chain["reason"] == "not improving" and chain["fixes"] == 1
    assert chain["history"][-1]["summary"].startswith("turn 2: duplicate")


def test_improving_chains_run_all_their_turns_and_history_stays_bounded() -> None:
    codes = [H.knob_module({"A": a, "B": 2, "C": 5, "D": 3}) for a in range(1, 7)]
    search = make(turns=6, history_turns=2)
    d = H.Driver(search, gen=scripted(*codes)).run()
    assert len(d.proposals) == 6 and search.chains["relu:c0"]["reason"] == "turns"
    assert all(len(p.params.get("history", [])) <= 2 for p in d.proposals)
    assert d.proposals[-1].params["feedback"]["speedup"] == H.judge(codes[-2]).speedup_vs_eager
    assert search.metrics()["best"]["relu"]["speedup"] == H.BEST


def test_best_parent_mode_goes_back_to_the_best_after_a_worse_turn() -> None:
    search = make(turns=4, parent="best", patience=2)
    d = H.Driver(search, gen=scripted(BETTER, WRONG, SLOW, BEST)).run()
    ps = d.proposals
    assert ps[2].params["parent_code"] == BETTER  # turn 1 was incorrect: improve the best, not it
    assert ps[2].params["history"][-1]["status"] == P.INCORRECT  # ...but the model hears about it
    latest = make(turns=4, parent="latest", patience=2)
    d2 = H.Driver(latest, gen=scripted(BETTER, WRONG, SLOW, BEST)).run()
    assert d2.proposals[2].params["parent_code"] == WRONG


def test_an_answer_without_code_keeps_the_parent_and_sends_the_error() -> None:
    def gen(p: Proposal) -> str | None:
        return SLOW if p.params["turn"] == 0 else None

    search = make(turns=3, edit_format="diff", patience=3)
    proposals: list[Proposal] = []
    while not search.done():
        for p in search.ask(4):
            proposals.append(p)
            code = gen(p)
            if code is None:  # what the engine tells when the edit did not apply
                failed = P.EvalResult(p.id, p.problem_id, P.COMPILE_ERROR, guard="no_code",
                                      error="openai: edit block 1 did not match the parent")
                search.tell(None, p, failed)
            else:
                search.tell(Candidate("c1", p.problem_id, p.id, code, code_hash(code), "x"), p, H.judge(code))
    assert proposals[2].params["parent_code"] == SLOW
    assert proposals[2].params["feedback"] == {"status": "no code",
                                               "edit_error": "openai: edit block 1 did not match the parent"}


def test_a_duplicate_of_another_chain_counts_as_that_chains_verdict() -> None:
    search = make(chains=2, turns=2)
    a, b = search.ask(2)
    original = Candidate("c1", "relu", a.id, WRONG, code_hash(WRONG), "x")
    search.tell(original, b, None)  # chain 1 repeats chain 0's answer, still being judged
    assert search.ask(2) == []  # chain 1 waits for that verdict
    search.tell(original, a, H.judge(WRONG))
    nxt = {p.params["chain"]: p for p in search.ask(2)}
    assert nxt[0].params["feedback"] == nxt[1].params["feedback"] == {"status": P.INCORRECT,
                                                                       "mismatch": "output differs at [0, 3]: 1.5 vs 0.0"}
    assert nxt[0].params["parent_code"] == nxt[1].params["parent_code"] == WRONG


def test_an_exhausted_generator_ends_the_chain() -> None:
    search = make(chains=2, turns=5)
    H.Driver(search, gen=lambda p: None).run()
    assert search.done() and {c["reason"] for c in search.chains.values()} == {"generator exhausted"}


def test_start_from_the_example_solution() -> None:
    search = make(start="example", turns=2)
    (p,) = search.ask(5)
    example = H.context().problems[0].solutions()["triton"].read_text()
    assert p.params["parent_code"] == example and p.parent_id is None and p.params["turn"] == 0


def test_deterministic_whatever_the_arrival_order_and_resumable_mid_run() -> None:
    def gen(p: Proposal) -> str | None:
        return H.mutate(p) if p.params["turn"] else H.knob_module({"A": 1, "B": 1, "C": p.params["chain"] % 2,
                                                                    "D": 1})

    opts: dict[str, Any] = {"chains": 3, "turns": 5, "patience": 2}
    runs = [H.Driver(make(("relu", "softmax"), seed=1, **opts), gen=gen, order_seed=o, batch=b).run()
            for o, b in [(0, 10), (1, 1), (2, 3)]]
    assert all(r.signature() == runs[0].signature() for r in runs[1:])
    assert len(runs[0].proposals) > 2 * 3  # chains went on past their first turn

    first = H.Driver(make(("relu", "softmax"), seed=1, **opts), gen=gen, order_seed=0, batch=10)
    for _ in range(3):
        first.step()
    resumed = make(("relu", "softmax"), seed=1, **opts)
    resumed.load_state_dict(json.loads(json.dumps(first.search.state_dict())))
    second = H.Driver(resumed, gen=gen, order_seed=5)
    second.proposals, second.pending = list(first.proposals), list(first.pending)
    second.hashes, second.seq = dict(first.hashes), first.seq
    second.run()
    assert second.signature() == runs[0].signature()
