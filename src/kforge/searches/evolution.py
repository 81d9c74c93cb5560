"""Evolution: islands of MAP-Elites archives, ring migration, mixed edit types (OpenEvolve/AlphaEvolve style).

Per problem, ``islands`` islands evolve separately. Each island keeps a MAP-Elites archive: cells
are tuples of feature bins (:mod:`kforge.searches.features`: roofline fraction, tile size, tensor
cores, code size, ... chosen by name in the recipe) and each cell holds the fittest *correct*
candidate that fell into it. Fitness is the speedup over PyTorch eager for a correct candidate and 0
otherwise.

An island runs in generations of ``population`` proposals. Every proposal of generation g is planned
from the island as it stood when generation g began; the verdicts of generation g are buffered and
folded into the archive, in slot order, once all of them are in. An island therefore depends only
on its own seeds and verdicts (and on its ring neighbour's migrants, taken at fixed generations),
not on the order results arrive in: the same recipe and generation cache give the same proposals,
with the same ids, seeds and params. Islands and problems do not wait for each other (except a
destination waiting for its neighbour to reach a migration generation), so the judges stay busy.

Each slot of a generation picks a parent from the archive (a power-law over fitness rank, or a
sigmoid around the median, divided by (1 + children)^novelty so that parents already used often
give way to under-explored ones; with probability ``exploration`` a uniformly random elite, as in
plain MAP-Elites) and an edit type from ``edit_mix``:

- ``diff``: SEARCH/REPLACE edits of the parent (``edit_format = "diff"``);
- ``full``: a full rewrite of the parent (``edit_format = "full"``);
- ``crossover``: the parent and a second parent from another cell (``second_parent_code``);
- ``tune``: ``generator_hint = "tune"``: the parent's tunable constants changed by the ``tune``
  generator, no model call: the engine routes these proposals to it (options from ``tune``) when the
  recipe's generator is another one (``route_tune``), and a parent it has no variant left for is not
  picked for a tune edit again (it stays a parent for the other edits);
- ``refine``: a repair of one of the island's failed children from the last generation (compile
  error, mismatch, crash) with its error and a short lineage history, or else a refinement of the
  island's best; chains are at most ``refine_turns`` deep (see :mod:`kforge.searches.refine`);
- ``sample``: a fresh sample with no parent.

Every proposal with a parent carries the parent's verdict in ``params["feedback"]``, and LLM edit
types carry ``params["inspirations"]``: the island's top programs and programs from distant cells,
as ``{"code", "speedup"}``. Before any candidate is correct an island samples afresh (and repairs
failures when ``edit_mix`` has ``refine``).

Every ``migration_interval`` generations each island sends its ``migrants`` best elites not sent
before to the next island of the ring, which files them into its own archive (a program whose code
it already holds is skipped). An island stops after ``generations`` generations, or after
``patience`` generations in a row that produced no new candidate (the generator had nothing, or
only duplicates); the search is done when every island has stopped.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
from typing import Any

from kforge.api import Candidate, Proposal, RunContext, Search, code_hash, derive_seed, rng_for
from kforge.hookspecs import hookimpl
from kforge.options import Option, RecipeError
from kforge.runtime import protocol as P
from kforge.searches.features import (
    DEFAULT_FEATURES,
    Feature,
    cell_key,
    cell_of,
    describe_cell,
    get_features,
    n_cells,
    parse_cell,
)
from kforge.searches.refine import (
    feedback_from_failure,
    feedback_from_result,
    history_entry,
    refine_params,
)

EDIT_TYPES = ("diff", "full", "crossover", "tune", "refine", "sample")
DEFAULT_MIX = {"diff": 0.5, "full": 0.2, "crossover": 0.1, "tune": 0.1, "refine": 0.1}
LLM_EDITS = ("diff", "full", "crossover", "refine")
REPAIRABLE = (P.COMPILE_ERROR, P.INCORRECT, P.RUNTIME_ERROR, P.TIMEOUT, P.REJECTED, "no code")


def parse_edit_mix(mix: dict[str, Any] | None) -> dict[str, float]:
    """Edit-type probabilities from the recipe, normalised; a RecipeError names a wrong key or value."""
    raw = dict(DEFAULT_MIX if mix is None else mix)
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in EDIT_TYPES:
            raise RecipeError(f"search.edit_mix.{key} is not an edit type; allowed: {', '.join(EDIT_TYPES)}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise RecipeError(f"search.edit_mix.{key} must be a number at least 0, not {value!r}.")
        out[key] = float(value)
    total = sum(out.values())
    if total <= 0:
        raise RecipeError("search.edit_mix must give at least one edit type a weight above 0.")
    return {k: out.get(k, 0.0) / total for k in EDIT_TYPES if out.get(k, 0.0) > 0}


def fitness_of(result: Any) -> float:
    """Speedup over PyTorch eager for a correct candidate, 0 otherwise (or when it was not timed)."""
    r = result if isinstance(result, dict) else result.to_dict()
    if r.get("status") != P.CORRECT:
        return 0.0
    s = r.get("speedup_vs_eager")
    return float(s) if isinstance(s, (int, float)) and math.isfinite(s) else 0.0


def selection_weights(fitnesses: list[float], children: list[int], *, method: str, alpha: float,
                      novelty: float) -> list[float]:
    """Parent weights for elites sorted best first: fitness (power-law over rank, or a sigmoid of
    (f - median) / MAD as in ShinkaEvolve) times 1 / (1 + children)^novelty."""
    n = len(fitnesses)
    if method == "uniform":
        base = [1.0] * n
    elif method == "sigmoid":
        med = statistics.median(fitnesses)
        mad = statistics.median([abs(f - med) for f in fitnesses]) or 1e-9
        base = [1.0 / (1.0 + math.exp(-max(min(alpha * (f - med) / mad, 50.0), -50.0))) for f in fitnesses]
    else:  # power-law over rank (ties share the better rank)
        base, rank = [], 0
        for i, f in enumerate(fitnesses):
            if i == 0 or f < fitnesses[i - 1]:
                rank = i
            base.append((rank + 1.0) ** -alpha)
    return [b / (1.0 + c) ** novelty for b, c in zip(base, children)]


class Evolution(Search):
    name = "evolution"
    description = "islands of MAP-Elites archives with ring migration and a mix of edit types (diff, full, " \
                  "crossover, tune, refine)"
    options = (
        Option("generations", int, 10, "generations per island (the search's budget)", minimum=1),
        Option("islands", int, 4, "islands per problem", minimum=1),
        Option("population", int, 4, "proposals per island per generation", minimum=1),
        Option("migration_interval", int, 3, "generations between migrations", minimum=1),
        Option("migrants", int, 1, "elites each island sends to the next island of the ring at a migration",
               minimum=0),
        Option("features", list, list(DEFAULT_FEATURES), "MAP-Elites features by name (roofline, tile_size, "
               "tensor_cores, code_size, kernels, warps) or 'module:attribute'", item_type=str),
        Option("selection", str, "power-law", "parent weighting by fitness", choices=("power-law", "sigmoid",
                                                                                     "uniform")),
        Option("selection_alpha", float, 1.0, "power-law exponent over rank, or sigmoid sharpness", minimum=0),
        Option("novelty", float, 1.0, "exponent of 1/(1+children): favours parents used less", minimum=0),
        Option("exploration", float, 0.1, "chance of a uniformly random elite as the parent", minimum=0),
        Option("edit_mix", dict, dict(DEFAULT_MIX), "probabilities of the edit types diff, full, crossover, tune, "
               "refine, sample (normalised)"),
        Option("inspirations_top", int, 2, "top programs of the island passed as inspirations", minimum=0),
        Option("inspirations_diverse", int, 1, "programs from distant archive cells passed as inspirations",
               minimum=0),
        Option("refine_turns", int, 3, "deepest repair chain of the refine edit type", minimum=1),
        Option("history_turns", int, 3, "lineage lines in params['history'] for refine edits", minimum=0),
        Option("refine_format", str, "diff", "what a refine edit asks for", choices=("full", "diff")),
        Option("seed_from", str, "sample", "first parents: fresh 'sample's, or the problem's 'example' solution "
               "as the parent", choices=("sample", "example")),
        Option("max_in_flight", int, None, "most proposals asked and not yet told (default: no cap beyond the "
               "engine's)", minimum=1),
        Option("patience", int, 3, "stop an island after this many generations in a row with no candidate",
               minimum=1),
        Option("temperature", float, None, "sampling temperature passed to the generator"),
        Option("route_tune", bool, True, "send tune edits to the built-in tune generator (no model call) when the "
               "recipe's generator is another one"),
        Option("tune", dict, {}, "options of the tune generator that tune edits go to (ranges, include, exclude, "
               "max_changes, module_constants)"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.mix = parse_edit_mix(self.opts.edit_mix)
        self.features: list[Feature] = get_features(list(self.opts.features))

    # -- setup and state ----------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.n_islands = int(self.opts.islands)
        self.population = int(self.opts.population)
        self.generations = int(self.opts.generations)
        # per problem: the verdict on every judged candidate (by candidate id) and the islands; each
        # island keeps its own records of the programs it made or received (lineage, children, code)
        self.problems: dict[str, dict[str, Any]] = {
            p.id: {"verdicts": {}, "migrations": 0, "duplicates": 0, "exhausted": 0,
                   "islands": [self._new_island(i) for i in range(self.n_islands)]}
            for p in ctx.problems}
        self.order = [(p.id, i) for p in ctx.problems for i in range(self.n_islands)]
        self.cursor = 0
        self.in_flight: dict[str, list[Any]] = {}  # proposal id -> [problem, island, generation, slot]
        self.asked = 0

    @staticmethod
    def _new_island(index: int) -> dict[str, Any]:
        return {"index": index, "generation": 0, "slot": 0, "told": {}, "programs": {}, "archive": {},
                "failures": [], "sent": [], "emigrants": {}, "waiting": False, "stopped": False,
                "stop_reason": None, "empty_streak": 0, "fresh_exhausted": False, "best_history": []}

    def state_dict(self) -> dict[str, Any]:
        return {"problems": self.problems, "cursor": self.cursor, "in_flight": self.in_flight, "asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for pid, ps in (state.get("problems") or {}).items():
            if pid in self.problems:
                self.problems[pid] = ps
        self.cursor = int(state.get("cursor", 0))
        self.in_flight = {k: list(v) for k, v in (state.get("in_flight") or {}).items()}
        self.asked = int(state.get("asked", 0))

    def done(self) -> bool:
        return all(isl["stopped"] for ps in self.problems.values() for isl in ps["islands"])

    def generator_routes(self) -> dict[str, dict[str, Any]]:
        """Tune edits go to the ``tune`` generator (the engine skips the route when it is the recipe's)."""
        if "tune" not in self.mix or not self.opts.route_tune:
            return {}
        return {"tune": dict(self.opts.tune or {})}

    def _tune_routed(self) -> bool:
        """Tune edits go to a generator of their own: its having nothing more for a parent says nothing
        about what the recipe's generator can do with it."""
        gen = getattr(self, "ctx", None) and self.ctx.generator
        return bool(self.generator_routes()) and gen is not None and getattr(gen, "name", None) != "tune"

    # -- ask ----------------------------------------------------------------------------------------
    def ask(self, n: int) -> list[Proposal]:
        cap = self.opts.max_in_flight
        room = n if cap is None else min(n, int(cap) - len(self.in_flight))
        out: list[Proposal] = []
        k = len(self.order)
        progressed = True
        while len(out) < room and progressed and k:
            progressed = False
            for step in range(k):
                if len(out) >= room:
                    break
                pid, i = self.order[(self.cursor + step) % k]
                p = self._next(pid, self.problems[pid]["islands"][i])
                if p is not None:
                    out.append(p)
                    progressed = True
            self.cursor = (self.cursor + 1) % k
        self.asked += len(out)
        return out

    def _next(self, pid: str, isl: dict[str, Any]) -> Proposal | None:
        while True:
            self._advance(pid, isl)
            if isl["stopped"] or isl["waiting"] or isl["slot"] >= self.population:
                return None
            slot = isl["slot"]
            isl["slot"] = slot + 1
            proposal = self._plan(pid, isl, slot)
            if proposal is None:
                isl["told"][str(slot)] = {"kind": "skipped"}
                continue
            self.in_flight[proposal.id] = [pid, isl["index"], isl["generation"], slot]
            return proposal

    # -- generations and migration ------------------------------------------------------------------
    def _complete(self, ps: dict[str, Any], isl: dict[str, Any]) -> bool:
        """Every slot told, and every duplicate's original judged (it counts as that verdict)."""
        if len(isl["told"]) < self.population:
            return False
        return all(rec["cid"] in ps["verdicts"] for rec in isl["told"].values() if rec["kind"] == "program")

    def _advance(self, pid: str, isl: dict[str, Any]) -> None:
        """Fold in a finished generation, start the next, take migrants when due (or wait for them)."""
        ps = self.problems[pid]
        while not isl["stopped"]:
            if isl["waiting"]:
                if not self._import(ps, isl):
                    return
                isl["waiting"] = False
            if not self._complete(ps, isl):
                return
            self._integrate(ps, isl)
            isl["generation"] += 1
            isl["slot"], isl["told"] = 0, {}
            g = isl["generation"]
            if g >= self.generations:
                isl["stopped"], isl["stop_reason"] = True, "generations"
            elif isl["empty_streak"] >= int(self.opts.patience):
                isl["stopped"], isl["stop_reason"] = True, "no new candidates"
            if self._migrates_at(g):
                isl["emigrants"][str(g)] = self._emigrants(isl)  # taken before its own import
                if not isl["stopped"]:
                    isl["waiting"] = True

    def _migrates_at(self, g: int) -> bool:
        return (self.n_islands > 1 and int(self.opts.migrants) > 0 and g > 0
                and g % int(self.opts.migration_interval) == 0 and g < self.generations)

    def _emigrants(self, isl: dict[str, Any]) -> list[dict[str, Any]]:
        """Copies of the island's best elites not sent before (a program migrates once from an island)."""
        sent = set(isl["sent"])
        chosen = [rec for cid, rec in self._elites(isl, include_exhausted=True) if cid not in sent]
        chosen = chosen[: int(self.opts.migrants)]
        isl["sent"].extend(rec["id"] for rec in chosen)
        return [{**copy.deepcopy(rec), "children": 0, "exhausted": False} for rec in chosen]

    def _import(self, ps: dict[str, Any], isl: dict[str, Any]) -> bool:
        """Take the ring neighbour's migrants for this generation; False while it has not got there."""
        src = ps["islands"][(isl["index"] - 1) % self.n_islands]
        key = str(isl["generation"])
        if key in src["emigrants"]:
            migrants = src["emigrants"].pop(key)
        elif src["stopped"]:
            migrants = self._emigrants(src)  # a stopped island's archive no longer changes
        else:
            return False
        held = {isl["programs"][cid]["hash"] for cid in isl["archive"].values()}
        for rec in migrants:
            if rec["hash"] in held:
                continue
            mine = isl["programs"].get(rec["id"])
            isl["programs"][rec["id"]] = {**rec, "children": mine["children"] if mine else 0,
                                          "migrated_from": src["index"]}
            if self._file(isl, isl["programs"][rec["id"]]):
                ps["migrations"] += 1
                held.add(rec["hash"])
        return True

    def _file(self, isl: dict[str, Any], rec: dict[str, Any]) -> bool:
        """Put a correct program in its archive cell if the cell is empty or it is fitter."""
        if rec.get("status") != P.CORRECT or rec.get("cell") is None:
            return False
        holder = isl["archive"].get(rec["cell"])
        if holder is None or rec["fitness"] > isl["programs"][holder]["fitness"]:
            isl["archive"][rec["cell"]] = rec["id"]
            return True
        return False

    def _integrate(self, ps: dict[str, Any], isl: dict[str, Any]) -> None:
        new, failures = 0, []
        turns = int(self.opts.refine_turns)
        for slot in sorted(isl["told"], key=int):
            rec = isl["told"][slot]
            kind = rec["kind"]
            if kind == "program":
                new += 1
                verdict = ps["verdicts"][rec["cid"]]
                before = isl["programs"].get(rec["cid"])
                prog = {"id": rec["cid"], "code": rec["code"], "hash": verdict["hash"], "status": verdict["status"],
                        "fitness": verdict["fitness"], "cell": verdict["cell"], "feedback": verdict["feedback"],
                        "island": isl["index"], "generation": isl["generation"], "edit": rec["edit"],
                        "parent": rec["parent"], "second_parent": rec.get("second_parent"), "turn": rec["turn"],
                        "children": before["children"] if before else 0,
                        "exhausted": bool(before and before.get("exhausted")),
                        "tune_exhausted": bool(before and before.get("tune_exhausted")),
                        "summary": history_entry(rec["turn"], rec["cid"], verdict["feedback"])}
                if before is not None and before.get("generation", 0) < isl["generation"]:
                    prog.update({k: before[k] for k in ("island", "generation", "edit", "parent", "second_parent",
                                                         "turn", "summary") if k in before})
                isl["programs"][rec["cid"]] = prog
                self._file(isl, prog)
                if prog["status"] in REPAIRABLE and prog["turn"] < turns and prog["id"] not in failures:
                    failures.append(prog["id"])
            elif kind == "no code":
                prog = rec["program"]
                if prog["turn"] < turns and prog.get("code"):
                    isl["programs"][prog["id"]] = prog
                    failures.append(prog["id"])
            elif kind == "exhausted":
                ps["exhausted"] += 1
                parent = rec.get("parent")
                if parent and parent in isl["programs"] and rec.get("edit") == "tune" and self._tune_routed():
                    isl["programs"][parent]["tune_exhausted"] = True  # still a parent for the model's edits
                elif parent and parent in isl["programs"]:
                    isl["programs"][parent]["exhausted"] = True
                elif not parent:
                    isl["fresh_exhausted"] = True
        isl["failures"] = failures
        isl["empty_streak"] = 0 if new else isl["empty_streak"] + 1
        elites = self._elites(isl, include_exhausted=True)
        best = elites[0][1] if elites else None
        isl["best_history"].append({"generation": isl["generation"], "best": best["fitness"] if best else None,
                                    "candidate": best["id"] if best else None, "new": new,
                                    "cells": len(isl["archive"])})
        self._prune(isl)

    @staticmethod
    def _prune(isl: dict[str, Any]) -> None:
        """Drop the code of programs nothing can use again (the store keeps every candidate's code)."""
        keep = set(isl["archive"].values()) | set(isl["failures"])
        for cid, prog in list(isl["programs"].items()):
            if cid in keep:
                continue
            if cid.startswith("p:"):  # a failure without code of its own, no longer repairable
                del isl["programs"][cid]
            elif prog.get("code") is not None:
                prog["code"] = None
                prog["feedback"] = None

    # -- planning one proposal ----------------------------------------------------------------------
    @staticmethod
    def _elites(isl: dict[str, Any], include_exhausted: bool = False) -> list[tuple[str, dict[str, Any]]]:
        progs = isl["programs"]
        out = [(cid, progs[cid]) for cid in set(isl["archive"].values())
               if include_exhausted or not progs[cid].get("exhausted")]
        out.sort(key=lambda kv: (-kv[1]["fitness"], kv[1]["hash"]))
        return out

    def _select(self, elites: list[tuple[str, dict[str, Any]]], rng: random.Random
                ) -> tuple[str, dict[str, Any]]:
        if len(elites) == 1:
            return elites[0]
        if rng.random() < float(self.opts.exploration):
            return elites[rng.randrange(len(elites))]
        weights = selection_weights([p["fitness"] for _, p in elites], [p.get("children", 0) for _, p in elites],
                                    method=str(self.opts.selection), alpha=float(self.opts.selection_alpha),
                                    novelty=float(self.opts.novelty))
        return rng.choices(elites, weights=weights)[0]

    def _plan(self, pid: str, isl: dict[str, Any], slot: int) -> Proposal | None:
        g, i = isl["generation"], isl["index"]
        rng = rng_for(self.ctx.seed, self.name, pid, i, g, slot, "plan")
        elites = self._elites(isl)
        failures = [f for f in isl["failures"] if f in isl["programs"]] if "refine" in self.mix else []
        if not elites:  # nothing correct yet: fresh samples, and repairs if the mix has refine edits
            if failures and (isl["fresh_exhausted"] or rng.random() < 0.5):
                edit = "refine"
            elif not isl["fresh_exhausted"]:
                edit = "sample"
            else:
                return None
        else:
            kinds = list(self.mix)
            edit = rng.choices(kinds, weights=[self.mix[k] for k in kinds])[0]
            if edit == "crossover" and len(elites) < 2:
                edit = "full"
            if edit == "sample" and isl["fresh_exhausted"]:
                edit = "full"
            if edit == "tune" and all(p.get("tune_exhausted") for _, p in elites):
                edit = "diff"  # the tune generator has nothing left for any elite

        params: dict[str, Any] = {"edit": edit, "island": i, "generation": g, "slot": slot,
                                  "sample": (g * self.n_islands + i) * self.population + slot}
        if self.opts.temperature is not None:
            params["temperature"] = self.opts.temperature
        parent: dict[str, Any] | None = None
        if edit == "sample":
            problem = self.ctx.problems_by_id[pid]
            path = problem.solutions().get(self.ctx.backend.name) if self.opts.seed_from == "example" else None
            if path is not None:
                params.update(parent_code=path.read_text(), edit_format="full")
        elif edit == "refine":
            if failures:
                parent = isl["programs"][failures[rng.randrange(len(failures))]]
                isl["failures"].remove(parent["id"])  # one repair per failure per generation
            else:
                parent = elites[0][1]
            params.update(refine_params(parent["code"], parent.get("feedback"), self._lineage(isl, parent),
                                        edit_format=str(self.opts.refine_format),
                                        history_turns=int(self.opts.history_turns)))
        else:
            pool = [e for e in elites if not e[1].get("tune_exhausted")] if edit == "tune" else elites
            _, parent = self._select(pool, rng)
            params["parent_code"] = parent["code"]
            if parent.get("feedback"):
                params["feedback"] = dict(parent["feedback"])
            if edit in ("diff", "full"):
                params["edit_format"] = edit
            elif edit == "tune":
                params["generator_hint"] = "tune"
            elif edit == "crossover":
                others = [(c, p) for c, p in elites if c != parent["id"] and p["cell"] != parent["cell"]] or \
                         [(c, p) for c, p in elites if c != parent["id"]]
                _, second = self._select(others, rng)
                params.update(edit_format="full", second_parent_code=second["code"], second_parent_id=second["id"],
                              second_parent_speedup=second["fitness"])
        if edit in LLM_EDITS:
            exclude = {parent["id"]} if parent else set()
            if params.get("second_parent_id"):
                exclude.add(params["second_parent_id"])
            params["inspirations"] = self._inspirations(isl, parent, exclude, rng)
        parent_id = None
        if parent is not None:
            parent_id = parent.get("parent") if parent["id"].startswith("p:") else parent["id"]
            real = isl["programs"].get(parent_id or "")
            if real is not None:
                real["children"] = real.get("children", 0) + 1
            params["parent_turn"] = parent.get("turn", 0)
        return Proposal(id=f"{pid}:i{i}g{g}s{slot}", problem_id=pid, step=params["sample"],
                        seed=derive_seed(self.ctx.seed, self.name, pid, i, g, slot), parent_id=parent_id,
                        params=params)

    def _lineage(self, isl: dict[str, Any], prog: dict[str, Any]) -> list[dict[str, Any]]:
        """History lines of a program and its ancestors on this island, oldest first."""
        out: list[dict[str, Any]] = []
        cur: dict[str, Any] | None = prog
        seen: set[str] = set()
        limit = max(int(self.opts.history_turns), 1)
        while cur is not None and len(out) < limit and cur["id"] not in seen:
            seen.add(cur["id"])
            if cur.get("summary"):
                out.append(cur["summary"])
            parent = cur.get("parent")
            cur = isl["programs"].get(parent) if parent else None
        return out[::-1]

    def _inspirations(self, isl: dict[str, Any], parent: dict[str, Any] | None, exclude: set[str],
                      rng: random.Random) -> list[dict[str, Any]]:
        """The island's top programs, then programs from the cells farthest from the parent's."""
        elites = [(c, p) for c, p in self._elites(isl, include_exhausted=True) if c not in exclude]
        top = elites[: int(self.opts.inspirations_top)]
        chosen = {c for c, _ in top}
        rest = [(c, p) for c, p in elites if c not in chosen]
        k = int(self.opts.inspirations_diverse)
        if rest and k:
            here = parse_cell(parent["cell"]) if parent and parent.get("cell") else None

            def distance(prog: dict[str, Any]) -> int:
                return sum(a != b for a, b in zip(here, parse_cell(prog["cell"]))) if here is not None else 0

            order = sorted(rest, key=lambda kv: (-distance(kv[1]), rng.random()))
            top = top + order[:k]
        return [{"code": p["code"], "speedup": p["fitness"]} for _, p in top if p.get("code")]

    # -- tell ---------------------------------------------------------------------------------------
    def tell(self, candidate: Candidate | None, proposal: Proposal, result: Any) -> None:
        where = self.in_flight.pop(proposal.id, None)
        if where is None:
            return  # not ours, or told twice
        pid, i, g, slot = where
        ps = self.problems[pid]
        isl = ps["islands"][int(i)]
        if int(g) != isl["generation"]:
            return  # cannot happen: a generation ends only when all its slots are told
        params = proposal.params
        turn = int(params.get("parent_turn", 0)) + 1 if params.get("edit") == "refine" else 0
        info = {"parent": proposal.parent_id, "edit": params.get("edit"), "turn": turn,
                "second_parent": params.get("second_parent_id")}
        rec: dict[str, Any]
        if candidate is None and result is None:
            rec = {"kind": "exhausted", "parent": proposal.parent_id, "edit": params.get("edit")}
        elif candidate is None:  # no code came back: a failure to repair from the parent's code
            error = result.error if hasattr(result, "error") else dict(result).get("error")
            fb = feedback_from_failure(error, edit=params.get("edit_format") == "diff")
            rec = {"kind": "no code", "program": {
                "id": f"p:{proposal.id}", "code": params.get("parent_code"), "hash": None, "status": "no code",
                "fitness": 0.0, "cell": None, "feedback": fb, "island": int(i), "generation": int(g),
                "children": 0, "summary": history_entry(turn, None, fb), **info}}
        else:
            if result is None:  # a duplicate: never judged twice; it counts as the original's verdict
                ps["duplicates"] += 1
            else:
                data = result if isinstance(result, dict) else result.to_dict()
                status = data.get("status")
                ps["verdicts"][candidate.id] = {
                    "status": status, "fitness": fitness_of(data), "hash": candidate.code_hash or
                    code_hash(candidate.code), "feedback": feedback_from_result(data),
                    "cell": cell_key(cell_of(self.features, candidate.code, data)) if status == P.CORRECT else None}
            rec = {"kind": "program", "cid": candidate.id, "code": candidate.code, **info}
        isl["told"][str(slot)] = rec
        # fold in whatever this completes now (the same as at the next ask, so metrics are current)
        for other in ps["islands"]:
            self._advance(pid, other)

    # -- metrics ------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        total_cells = n_cells(self.features)
        problems: dict[str, Any] = {}
        for pid, ps in self.problems.items():
            islands = []
            best: dict[str, Any] | None = None
            for isl in ps["islands"]:
                elites = self._elites(isl, include_exhausted=True)
                top = elites[0][1] if elites else None
                islands.append({"island": isl["index"], "generation": isl["generation"],
                                "best": top["fitness"] if top else None, "best_candidate": top["id"] if top else None,
                                "archive_fill": round(len(isl["archive"]) / total_cells, 4),
                                "cells": len(isl["archive"]),
                                "stopped": isl["stop_reason"] if isl["stopped"] else None})
                if top is not None and (best is None or top["fitness"] > best["speedup"]):
                    best = {"speedup": top["fitness"], "candidate": top["id"], "island": top["island"],
                            "generation": top["generation"], "cell": describe_cell(self.features, top["cell"])}
            problems[pid] = {"generation": min(isl["generation"] for isl in ps["islands"]), "best": best,
                             "islands": islands, "migrations": ps["migrations"], "duplicates": ps["duplicates"],
                             "judged": len(ps["verdicts"])}
        return {"problems": problems, "asked": self.asked, "in_flight": len(self.in_flight),
                "cells_per_island": total_cells, "features": [f.name for f in self.features]}


@hookimpl
def register_searches(register):
    register(Evolution)
