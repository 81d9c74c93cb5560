"""Rebuild ``quickstart_run.json``: the dashboard tests' run, dumped from a real store.

    kforge run recipes/quickstart.toml --set run.out=/tmp/tui-runs
    kforge eval --problem layernorm VARIANT.py --json --set eval.max_timing_s=5 > RESULT.json
    python tests/tui/data/make_fixture.py /tmp/tui-runs/quickstart-* VARIANT.py RESULT.json

The dump holds the quickstart run exactly as its store recorded it (meta, problems, proposals,
candidates, results, events), plus one refinement a best-of-n run cannot make: a child of c0009
(layernorm ``one_pass.py`` with BLOCK_SIZE capped at 1024 instead of 4096), judged for real with
``kforge eval``, recorded as c0010 with ``parent_id = c0009``. The summary is recomputed over the ten
results with :func:`kforge.metrics.summarise_run`, and the run's last two events move after it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from kforge.api import code_hash
from kforge.metrics import summarise_run

OUT = Path(__file__).with_name("quickstart_run.json")


def rows(db: sqlite3.Connection, query: str) -> list[dict]:
    return [dict(r) for r in db.execute(query)]


def main(run_dir: str, variant: str, result_file: str) -> None:
    db = sqlite3.connect(Path(run_dir) / "kforge.db")
    db.row_factory = sqlite3.Row
    meta = {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT key, value FROM meta")}
    problems = [{"summary": json.loads(r["summary"]), "shape_name": r["shape_name"]}
                for r in db.execute("SELECT summary, shape_name FROM problems ORDER BY rowid")]
    proposals = rows(db, "SELECT id, problem_id, step, seed, parent_id, params, outcome, tokens_in, tokens_out, "
                         "cost_usd FROM proposals ORDER BY seq")
    for p in proposals:
        p["params"] = json.loads(p["params"] or "{}")
    candidates = rows(db, "SELECT id, proposal_id, problem_id, code, code_hash, generator, model, label, parent_id, "
                          "tokens_in, tokens_out, cost_usd, meta FROM candidates ORDER BY seq")
    for c in candidates:
        c["meta"] = json.loads(c["meta"] or "{}")
    results = [json.loads(r["result"]) for r in db.execute("SELECT result FROM results ORDER BY seq")]
    events = [json.loads(r["data"]) for r in db.execute("SELECT data FROM events ORDER BY seq")]
    state = {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT key, value FROM state")}

    # the child of c0009, judged for real
    code = Path(variant).read_text()
    res = json.loads(Path(result_file).read_text())
    res["request_id"] = res["candidate_id"] = "c0010"
    res["speedup"] = res["speedup_vs_eager"] if res["status"] == "correct" else None
    tail = events[-2:]  # summary, run_finished
    events = events[:-2]
    t0 = events[-1]["ts"] + 0.001
    t1 = round(t0 + res["durations_s"]["total"], 3)
    prop = {"id": "layernorm:r0", "problem_id": "layernorm", "step": 3, "seed": 7, "parent_id": "c0009",
            "params": {"parent": "c0009", "refine": "BLOCK_SIZE 4096 -> 1024"}, "outcome": "candidate c0010",
            "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
    cand = {"id": "c0010", "proposal_id": prop["id"], "problem_id": "layernorm", "code": code,
            "code_hash": code_hash(code), "generator": "tune", "model": None, "label": "BLOCK_SIZE[min] 4096->1024",
            "parent_id": "c0009", "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
            "meta": {"parent": "parent c0009", "changes": {"BLOCK_SIZE (min cap)": [4096, 1024]}}}
    timing = res.get("timing") or {}
    events += [
        {"event": "proposal", "ts": t0, "proposal": prop["id"], "problem": "layernorm", "step": 3},
        {"event": "candidate", "ts": t0, "candidate": "c0010", "problem": "layernorm", "label": cand["label"],
         "generator": "tune", "proposal": prop["id"]},
        {"event": "result", "ts": t1, "problem": "layernorm", "candidate": "c0010", "label": cand["label"],
         "status": res["status"], "speedup": res["speedup"], "device": res["device"],
         "device_kind": res["device_kind"], "guard": res["guard"], "error": res["error"],
         "time_ms": timing.get("median_ms"), "baseline_ms": (res.get("baseline_eager") or {}).get("median_ms"),
         "roofline_fraction": res["roofline_fraction"], "timing_method": res["timing_method"],
         "speedup_vs_compile": res["speedup_vs_compile"], "aa_ratio": res.get("aa_ratio"), "cv": timing.get("cv"),
         "n": timing.get("n"), "flags": res["flags"], "shape": res["shape_name"]},
    ]
    best = max((r["speedup"] or 0) for r in results if r["problem_id"] == "layernorm")
    if res["speedup"] and res["speedup"] > best:
        events.append({"event": "best_improved", "ts": t1, "problem": "layernorm", "candidate": "c0010",
                       "speedup": res["speedup"]})
    proposals.append(prop)
    candidates.append(cand)
    results.append(res)
    shift = t1 - tail[0]["ts"] + 0.5
    summary = summarise_run(results, [p["summary"]["id"] for p in problems])
    old = tail[0]
    summary.update(usage=old["usage"], run_dir=old["run_dir"], stopped=old["stopped"], shape=old["shape"],
                   device=old["device"], wall_s=round(old["wall_s"] + shift, 2),
                   gpu_busy_fraction=old.get("gpu_busy_fraction"))
    events += [{"event": "summary", "ts": round(old["ts"] + shift, 3), **summary},
               {**tail[1], "ts": round(tail[1]["ts"] + shift, 3)}]
    meta["summary"] = summary
    meta["elapsed_s"] = round(meta["elapsed_s"] + shift, 3)
    provenance = json.loads((Path(run_dir) / "provenance.json").read_text())
    OUT.write_text(json.dumps({"meta": meta, "problems": problems, "proposals": proposals, "candidates": candidates,
                               "results": results, "events": events, "state": state, "provenance": provenance},
                              indent=1) + "\n")
    print(f"wrote {OUT}: {len(candidates)} candidates, {len(results)} results, {len(events)} events")


if __name__ == "__main__":
    main(*sys.argv[1:4])
