"""The ``ttt`` search: test-time training. The model's LoRA is updated from the rewards its kernels earn.

A *step* is ``groups`` x ``rollouts`` proposals. Each group starts from one state of the buffer
(:mod:`kforge_hf.puct`): the problem alone, or the problem plus an earlier correct candidate to
improve (``params["parent_code"]`` and ``params["feedback"]``). When every rollout of the step has a
reward (:mod:`kforge_hf.rewards`), advantages are computed per group (:mod:`kforge_hf.advantages`),
the generator makes one on-policy update (``train_step``), the buffer learns the groups' results and
takes the best new candidates as states, and everything is checkpointed under ``<run dir>/ttt/``:

- ``ttt/step-NNNN/``: the generator's adapter (``adapter/``, peft format), optimiser state
  (``optimizer.pt``), ``policy.json``, and ``search.json`` (buffer, PUCT statistics, rewards seen);
- ``ttt/rollouts/``: the samples of the step in progress (tokens and sampling log-probs);
- ``ttt/codes/``: the code of the step's correct candidates (the next states);
- ``ttt/metrics.jsonl``: one line of figures per step.

The search's ``state_dict()`` (saved by the engine with every ask and tell) holds the step counter,
the step in progress and a pointer to the latest checkpoint, so ``kforge resume`` reloads the
checkpoint (the generator reloads its adapter and optimiser) and continues the step it was in.

The search needs the generator object for ``train_step``. It takes ``ctx.generator`` when the engine
sets it, else the most recently created ``hf`` generator in the process (see docs/ttt.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kforge.api import Candidate, Proposal, RunContext, Search, derive_seed
from kforge.options import Option, RecipeError

from kforge_hf.advantages import ESTIMATORS, advantages
from kforge_hf.puct import PUCTBuffer, State, root_id
from kforge_hf.rewards import SHAPES, RewardConfig

STATE_VERSION = 1


def _get(result: Any, key: str) -> Any:
    return result.get(key) if isinstance(result, dict) else getattr(result, key, None)


def _feedback(result: Any) -> dict[str, Any]:
    """What the next prompt says about a correct candidate it starts from."""
    timing = _get(result, "timing") or {}
    base = _get(result, "baseline_eager") or {}
    fb: dict[str, Any] = {"status": _get(result, "status")}
    if timing.get("median_ms") is not None:
        fb["time_ms"] = timing["median_ms"]
    if base.get("median_ms") is not None:
        fb["baseline_ms"] = base["median_ms"]
    if _get(result, "speedup_vs_eager") is not None:
        fb["speedup"] = _get(result, "speedup_vs_eager")
    if _get(result, "roofline_fraction") is not None:
        fb["roofline_fraction"] = _get(result, "roofline_fraction")
    return fb


class TTTSearch(Search):
    name = "ttt"
    description = ("test-time training: steps of groups x rollouts from PUCT-chosen states, rewards from the judge, "
                   "an on-policy LoRA update through the generator's train_step (needs the hf generator)")
    options = (
        Option("steps", int, 50, "training steps (each: groups x rollouts candidates, then one update)", minimum=1),
        Option("groups", int, 8, "groups per step; each starts from its own state", minimum=1),
        Option("rollouts", int, 8, "rollouts per group (same state and prompt, different seeds)", minimum=1),
        Option("temperature", float, 1.0, "sampling temperature of every rollout", minimum=0),
        Option("reward", str, "log", "reward of a correct kernel from its speedup s: 'log' (log2(1+s)), 'linear' (s), "
               "'inverse_time' (1/time_ms)", choices=SHAPES),
        Option("reward_scale", float, 1.0, "multiplies the reward of a correct kernel"),
        Option("max_speedup", float, None, "speedups above this count as this (guards against a lucky timing)"),
        Option("reward_clip", list, None, "[low, high]: clip a correct kernel's reward", item_type=float),
        Option("correct_bonus", float, 0.0, "added to the reward of every correct kernel"),
        Option("failure_reward", float, 0.0, "reward of a failure (no code, compile error, mismatch, crash, timeout)"),
        Option("advantage", str, "entropic_adaptive", "advantage estimator per group: 'mean' (group-mean baseline), "
               "'loo' (leave-one-out), 'entropic' (fixed beta), 'entropic_adaptive' (beta held to kl_budget)",
               choices=ESTIMATORS),
        Option("normalize_std", bool, False, "with advantage = 'mean': divide by the group's standard deviation"),
        Option("beta", float, 2.0, "beta of the 'entropic' estimator", minimum=0),
        Option("kl_budget", float, math.log(2), "'entropic_adaptive': KL(softmax(beta r) || uniform) per group",
               minimum=0),
        Option("learning_rate", float, 4e-5, "Adam learning rate of the LoRA", minimum=0),
        Option("clip_eps", float, 0.2, "importance-ratio clip (PPO style); 0: the plain importance-sampling loss",
               minimum=0),
        Option("kl_coef", float, 0.0, "weight of the KL penalty towards the base model (adapter disabled)", minimum=0),
        Option("track_kl", bool, True, "report KL to the base model every step (one extra forward pass)"),
        Option("num_minibatches", int, 1, "optimiser steps per training step (the batch split in this many parts)",
               minimum=1),
        Option("max_grad_norm", float, 1.0, "gradient clipping (0: none)", minimum=0),
        Option("loss_agg", str, "token-mean", "how token losses are averaged", choices=("token-mean", "seq-mean")),
        Option("skip_constant_groups", bool, True, "leave out groups whose rewards are all equal (zero advantage)"),
        Option("puct_c", float, 1.0, "PUCT exploration weight", minimum=0),
        Option("reuse", bool, True, "start groups from earlier candidates (PUCT over the buffer); false: always from "
               "the bare problem"),
        Option("max_buffer", int, 1000, "most states kept", minimum=1),
        Option("children_per_parent", int, 2, "new states kept per parent per step (0: all)", minimum=0),
        Option("edit_format", str, "full", "with a parent candidate: the full module or SEARCH/REPLACE edits",
               choices=("full", "diff")),
        Option("keep_checkpoints", int, 2, "step checkpoints kept on disk (the latest ones)", minimum=2),
    )

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        o = self.opts  # resolved: every option with its value or its declared default
        self.steps = int(o.steps)
        self.groups = int(o.groups)
        self.rollouts = int(o.rollouts)
        clip = o.reward_clip
        if clip is not None and len(clip) != 2:
            raise RecipeError("search.reward_clip must be [low, high]")
        self.reward_cfg = RewardConfig(shape=str(o.reward), scale=float(o.reward_scale),
                                       max_speedup=o.max_speedup,
                                       clip=(float(clip[0]), float(clip[1])) if clip else None,
                                       correct_bonus=float(o.correct_bonus),
                                       failure=float(o.failure_reward))
        self.buffer = PUCTBuffer(c=float(o.puct_c), max_size=int(o.max_buffer),
                                 children_per_parent=int(o.children_per_parent),
                                 root_value=self.reward_cfg.failure)
        for p in ctx.problems:
            self.buffer.add_root(p.id)
        self.problem_order = [p.id for p in ctx.problems]
        self.step = 0
        self.round: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.cands: dict[str, list[Any]] = {}  # candidate id -> [reward, status, speedup] (reward None: excluded)
        self.best_speedup: dict[str, float] = {}
        self.checkpoint: str | None = None
        self.prev_round_ids: list[str] = []
        self.codes: dict[str, str] = {}  # this step's correct candidates, by id
        self.root = Path(ctx.run_dir) / "ttt" if ctx.run_dir is not None else None
        # proposals the engine should keep in flight so one step reaches the generator as one batch
        # (read by an engine that honours it; see docs/ttt.md)
        self.lookahead = self.groups * self.rollouts
        self.generator = self._find_generator(ctx)
        if self.root is not None and hasattr(self.generator, "keep_rollouts"):
            self.generator.keep_rollouts(self.root / "rollouts")

    @staticmethod
    def _find_generator(ctx: RunContext) -> Any:
        gen = getattr(ctx, "generator", None)
        if gen is None:
            from kforge_hf.generator import latest_generator

            gen = latest_generator()
        trainable = getattr(gen, "supports_training", None)
        if trainable is None:
            trainable = callable(getattr(gen, "train_step", None))
        if gen is None or not trainable:
            raise RecipeError("the ttt search trains the generator's model and needs a generator with train_step "
                              "(the hf generator: [generator] name = \"hf\")")
        return gen

    # -- asking ---------------------------------------------------------------------------------
    def done(self) -> bool:
        return self.step >= self.steps and self.round is None

    def _start_round(self) -> None:
        s = self.step
        groups: list[dict[str, Any]] = []
        per_problem: dict[str, list[int]] = {}
        for g in range(self.groups):
            pid = self.problem_order[(s * self.groups + g) % len(self.problem_order)]
            per_problem.setdefault(pid, []).append(g)
        picks: dict[int, Any] = {}
        for pid, gs in per_problem.items():
            if self.opts.reuse:
                chosen = self.buffer.select(len(gs), pid)
            else:  # every group from the bare problem
                chosen = [e for e in self.buffer.scores(pid) if e.state.id == root_id(pid)] * len(gs)
            for g, entry in zip(gs, chosen):
                picks[g] = entry
        for g in range(self.groups):
            e = picks[g]
            groups.append({"state": e.state.id, "problem": e.state.problem_id, "score": round(e.score, 6),
                           "q": round(e.q, 6), "n": e.n})
        # rewards: proposal -> reward (None: left out); status: proposal -> [status, speedup];
        # pending: duplicate proposal -> the candidate whose verdict it waits for
        self.round = {"step": s, "groups": groups, "asked": 0, "rewards": {}, "status": {}, "pending": {},
                      "new_cands": {}, "correct": [], "started": time.time()}

    def _proposal_id(self, g: int, k: int) -> str:
        assert self.round is not None
        return self._proposal_id_for(self.round["step"], g, k)

    def _proposal(self, i: int) -> Proposal:
        assert self.round is not None
        s = self.round["step"]
        g, k = divmod(i, self.rollouts)
        group = self.round["groups"][g]
        state = self.buffer.get(group["state"]) if group["state"] in self.buffer else None
        params: dict[str, Any] = {"ttt_step": s, "group": g, "sample": k, "state": group["state"],
                                  "temperature": float(self.opts.temperature)}
        if state is not None and not state.is_root:
            params["parent_code"] = state.code
            params["feedback"] = dict(state.feedback or {})
            params["edit_format"] = str(self.opts.edit_format)
        return Proposal(id=self._proposal_id(g, k), problem_id=group["problem"], step=s,
                        seed=derive_seed(self.ctx.seed, self.name, s, g, k),
                        parent_id=state.candidate_id if state is not None else None, params=params)

    def ask(self, n: int) -> list[Proposal]:
        if self.done():
            return []
        if self.round is None:
            self._start_round()
        assert self.round is not None
        total = self.groups * self.rollouts
        out = []
        while len(out) < n and self.round["asked"] < total:
            out.append(self._proposal(self.round["asked"]))
            self.round["asked"] += 1
        return out

    # -- telling --------------------------------------------------------------------------------
    def tell(self, candidate: Candidate | None, proposal: Proposal, result: Any) -> None:
        rnd = self.round
        if rnd is None or proposal.params.get("ttt_step") != rnd["step"] or proposal.id in rnd["rewards"]:
            return  # not of the step in progress (or told twice)
        if candidate is None and result is None:  # the generator had nothing for this problem
            rnd["rewards"][proposal.id] = None
        elif result is None:  # a duplicate of an earlier candidate: it earns what that one earned
            assert candidate is not None
            known = rnd["new_cands"].get(candidate.id) or self.cands.get(candidate.id)
            if known is None:
                rnd["pending"][proposal.id] = candidate.id
                return
            rnd["rewards"][proposal.id] = known[0]
            rnd["status"][proposal.id] = [known[1], known[2]]
        else:
            reward = self.reward_cfg.reward(result)
            status = _get(result, "status")
            speedup = _get(result, "speedup_vs_eager") if status == "correct" else None
            rnd["rewards"][proposal.id] = reward
            rnd["status"][proposal.id] = [status, speedup]
            if candidate is not None:
                rnd["new_cands"][candidate.id] = [reward, status, speedup]
                for pid, cid in list(rnd["pending"].items()):
                    if cid == candidate.id:
                        rnd["rewards"][pid] = reward
                        rnd["status"][pid] = [status, speedup]
                        del rnd["pending"][pid]
                if status == "correct" and reward is not None:
                    rnd["correct"].append({"candidate": candidate.id, "group": int(proposal.params.get("group", 0)),
                                           "code_hash": candidate.code_hash, "reward": reward, "speedup": speedup,
                                           "feedback": _feedback(result)})
                    self._keep_code(candidate.id, candidate.code)
        if len(rnd["rewards"]) >= self.groups * self.rollouts and not rnd["pending"]:
            self._finish_round()

    def _keep_code(self, cid: str, code: str) -> None:
        self.codes[cid] = code
        if self.root is not None:
            folder = self.root / "codes"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{cid}.py").write_text(code)

    def _code(self, cid: str) -> str | None:
        if cid in self.codes:
            return self.codes[cid]
        if self.root is not None:
            for path in (self.root / "codes" / f"{cid}.py", self.root.parent / "candidates" / f"{cid}.py"):
                if path.is_file():
                    return path.read_text()
        return None

    # -- the update -----------------------------------------------------------------------------
    def _finish_round(self) -> None:
        rnd = self.round
        assert rnd is not None
        started = time.time()
        o = self.opts
        estimator = str(o.advantage)
        kl_coef = float(o.kl_coef)
        ids: list[str] = []
        advs: list[float] = []
        betas: list[float] = []
        all_rewards: list[float] = []
        excluded = 0
        for g, group in enumerate(rnd["groups"]):
            pids = [self._proposal_id(g, k) for k in range(self.rollouts)]
            told = [(pid, rnd["rewards"].get(pid)) for pid in pids]
            scored = [(pid, float(r)) for pid, r in told if r is not None]
            excluded += len(told) - len(scored)
            rewards = [r for _, r in scored]
            all_rewards.extend(rewards)
            self.buffer.record_group(group["state"], rewards)
            if len(scored) < 2:
                continue
            if o.skip_constant_groups and max(rewards) == min(rewards) and kl_coef == 0:
                continue
            a, diag = advantages(rewards, estimator, beta=float(o.beta),
                                 kl_budget=float(o.kl_budget), normalize_std=bool(o.normalize_std))
            if "beta" in diag:
                betas.append(float(diag["beta"]))
            ids.extend(pid for pid, _ in scored)
            advs.extend(a)
        train: dict[str, Any] = {}
        if ids:
            train = self.generator.train_step({
                "rollout_ids": ids, "advantages": advs, "lr": float(o.learning_rate),
                "clip_eps": float(o.clip_eps), "kl_coef": kl_coef, "track_kl": bool(o.track_kl),
                "num_minibatches": int(o.num_minibatches), "max_grad_norm": float(o.max_grad_norm),
                "loss_agg": str(o.loss_agg)})
        # the buffer: this step's correct candidates become states
        children: list[State] = []
        for item in rnd["correct"]:
            g = int(item["group"])
            parent = rnd["groups"][g]["state"]
            pstate = self.buffer.get(parent) if parent in self.buffer else None
            code = self._code(item["candidate"])
            if code is None:
                continue
            children.append(State(id=item["candidate"], problem_id=rnd["groups"][g]["problem"], code=code,
                                  value=item["reward"], speedup=item["speedup"], feedback=item["feedback"],
                                  parents=[parent, *(pstate.parents if pstate else [])], step=rnd["step"],
                                  code_hash=item["code_hash"], candidate_id=item["candidate"]))
        added = self.buffer.add_children(children)
        self.cands.update(rnd["new_cands"])
        step_speedups = [float(sp) for st, sp in rnd["status"].values() if st == "correct" and sp is not None]
        for item in rnd["correct"]:
            if item["speedup"] is not None:
                prob = rnd["groups"][int(item["group"])]["problem"]
                self.best_speedup[prob] = max(self.best_speedup.get(prob, 0.0), float(item["speedup"]))
        n_told = len(rnd["rewards"])
        n_correct = sum(1 for st, _ in rnd["status"].values() if st == "correct")
        metrics: dict[str, Any] = {
            "step": rnd["step"], "rollouts": n_told, "excluded": excluded,
            "reward_mean": sum(all_rewards) / len(all_rewards) if all_rewards else None,
            "reward_max": max(all_rewards) if all_rewards else None,
            "correct_rate": n_correct / n_told if n_told else 0.0,
            "best_speedup_step": max(step_speedups) if step_speedups else None,
            "best_speedup": max(self.best_speedup.values()) if self.best_speedup else None,
            "beta_mean": sum(betas) / len(betas) if betas else None,
            "trained_rollouts": len(ids), "new_states": len(added), **self.buffer.stats(),
            "kl": train.get("kl"), "kl_old": train.get("kl_old"), "lr": train.get("lr"), "loss": train.get("loss"),
            "grad_norm": train.get("grad_norm"), "clip_fraction": train.get("clip_fraction"),
            "adapter_version": train.get("adapter_version"), "missing_rollouts": train.get("missing", 0),
            "train_s": round(time.time() - started, 3),
            "step_s": round(time.time() - float(rnd.get("started") or started), 3),
        }
        self.history.append(metrics)
        self.step = rnd["step"] + 1
        self.round = None
        old_ids, self.prev_round_ids = self.prev_round_ids, [
            self._proposal_id_for(rnd["step"], g, k) for g in range(self.groups) for k in range(self.rollouts)]
        self._save_checkpoint()
        if hasattr(self.generator, "forget_rollouts"):
            self.generator.forget_rollouts(old_ids)  # the step before: its checkpoint is no longer the latest
        self.codes = {}

    @staticmethod
    def _proposal_id_for(step: int, g: int, k: int) -> str:
        return f"ttt{step:04d}-g{g:02d}-k{k:02d}"

    # -- checkpoints ----------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if self.root is None:
            return
        done_step = self.step - 1
        name = f"step-{done_step:04d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if hasattr(self.generator, "save_checkpoint"):
            self.generator.save_checkpoint(tmp)
        (tmp / "search.json").write_text(json.dumps({
            "version": STATE_VERSION, "step": self.step, "buffer": self.buffer.state_dict(), "cands": self.cands,
            "best_speedup": self.best_speedup, "prev_round_ids": self.prev_round_ids}))
        shutil.rmtree(final, ignore_errors=True)  # a step redone after a crash replaces its first attempt
        os.replace(tmp, final)
        # the whole history each time: a step redone after a crash is not listed twice
        lines = "".join(json.dumps(m) + "\n" for m in self.history)
        tmp_metrics = self.root / ".metrics.jsonl.tmp"
        tmp_metrics.write_text(lines)
        os.replace(tmp_metrics, self.root / "metrics.jsonl")
        self.checkpoint = str(final.relative_to(self.root.parent))
        keep = int(self.opts.keep_checkpoints)
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        for old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "step": self.step, "steps": self.steps, "checkpoint": self.checkpoint,
                "round": self.round, "history": self.history, "metrics": self.history[-1] if self.history else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        ck = state.get("checkpoint")
        if ck:
            if self.root is None:
                raise RecipeError("the ttt search cannot resume without a run directory")
            folder = self.root.parent / ck
            data = json.loads((folder / "search.json").read_text())
            self.buffer.load_state_dict(data["buffer"])
            for p in self.problem_order:  # a problem added to the recipe since gets its root
                self.buffer.add_root(p)
            self.cands = {k: list(v) for k, v in (data.get("cands") or {}).items()}
            self.best_speedup = {k: float(v) for k, v in (data.get("best_speedup") or {}).items()}
            self.prev_round_ids = list(data.get("prev_round_ids") or [])
            if hasattr(self.generator, "load_checkpoint"):
                self.generator.load_checkpoint(folder)
        self.checkpoint = ck
        self.step = int(state.get("step") or 0)
        self.round = state.get("round")
        self.history = list(state.get("history") or [])
        self.codes = {}
        if self.round is not None:
            for item in self.round.get("correct", []):
                code = self._code(item["candidate"])
                if code is not None:
                    self.codes[item["candidate"]] = code

    # -- figures --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        told = len(self.round["rewards"]) if self.round else 0
        out = {"step": self.step, "steps": self.steps, "step_progress": f"{told}/{self.groups * self.rollouts}"}
        for key in ("reward_mean", "reward_max", "correct_rate", "best_speedup", "kl", "lr", "loss", "beta_mean",
                    "buffer_size"):
            out[key] = last.get(key)
        return out
