"""Correctness: trials on fresh inputs from several distributions, the input-mutation check by digest,
the determinism double call, held-out shapes, and the tolerance arbitration (docs/evaluation.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from kforge.runtime import protocol as P
from kforge.runtime.problem import (
    ARBITRATED_GUARDS,
    DISTRIBUTIONS,
    Mismatch,
    all_finite,
    clone_inputs,
    compare,
    compare_exact,
    digest,
    draw_inputs,
    exact_reference,
    flatten_outputs,
)
from kforge.runtime.sandbox_client import Sandbox, _payload_devices, reply_cap
from kforge.runtime.wire import dtype_from_name

if TYPE_CHECKING:
    from kforge.runtime.judge import Judge  # the class these methods are mixed into

class Correctness:
    """Judge methods: correctness at the main and held-out shapes."""

    def _all_correctness(self: Judge, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,  # type: ignore[misc]  # a mixin of Judge
                         init_inputs: list[Any], atol: float, rtol: float) -> bool:
        """Correctness at the main shape, then at each held-out shape."""
        t0 = time.perf_counter()
        if not self._correctness(req, res, sb, module, ref_model, max(int(req.trials), 1), atol, rtol, "main"):
            return False
        res.diagnostics["correctness_main_s"] = round(time.perf_counter() - t0, 4)
        for k, shape in enumerate(req.heldout):
            label = f"heldout:{k}"
            with self.lock.hold(exclusive=False):  # the held-out reference's weights go to the GPU
                h_module, h_ref, h_init = self._reference(req, shape)
                reply = sb.call({"cmd": "construct", "init_seed": req.init_seed}, timeout=req.compile_timeout_s,
                                tensors={"init": self._shareable(h_init)})
            if not reply.get("ok"):
                self._fail_reply(res, reply, "init")
                res.error = f"{label} shape {shape}: {res.error}"
                return False
            if not self._correctness(req, res, sb, h_module, h_ref, max(int(req.heldout_trials), 1), atol, rtol,
                                     label):
                return False
            del h_ref
        if req.heldout:
            with self.lock.hold(exclusive=False):
                reply = sb.call({"cmd": "construct", "init_seed": req.init_seed}, timeout=req.compile_timeout_s,
                                tensors={"init": self._shareable(init_inputs)})
            if not reply.get("ok"):
                self._fail_reply(res, reply, "init")
                return False
        return True

    def _reference_outputs(self: Judge, req: P.EvalRequest, module: Any, ref_model: Any, seed: int, dist: str,  # type: ignore[misc]  # a mixin of Judge
                           key: int) -> tuple[list[Any], Any, list[Any] | None]:
        """Inputs for one trial, the reference's output on them, and their digest (None for a problem
        that writes its inputs by design). The reference runs on the inputs themselves, not a copy: a
        digest before and after shows whether it wrote them; if it did, the inputs are drawn again from
        the same seed (and from then on the reference of this problem runs on a copy)."""
        dev, dtype = self.device, dtype_from_name(req.dtype)
        pkey = self._problem_key(req, req.shape)
        with self._shared_alloc():
            inputs = draw_inputs(module, seed, dist, dtype, dev)
        before = None if req.inplace else digest(inputs, key)
        with torch.no_grad():
            if req.inplace or pkey in self._mutating:
                ref_out = ref_model(*clone_inputs(inputs))
            else:
                ref_out = ref_model(*inputs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if before is not None and pkey not in self._mutating and digest(inputs, key) != before:
            # The reference wrote its inputs: the candidate must still get the pristine ones.
            self._mutating.add(pkey)
            with self._shared_alloc():
                inputs = draw_inputs(module, seed, dist, dtype, dev)
            if digest(inputs, key) != before:
                raise RuntimeError(f"the reference of {req.problem_id} writes its inputs, and get_inputs() does not "
                                   "give the same inputs again from the same seed: declare the problem in-place")
        return inputs, ref_out, before

    def _arbitrate(self: Judge, exc: Mismatch, ref_model: Any, inputs: list[Any], out: Any, ref_out: Any, atol: float,  # type: ignore[misc]  # a mixin of Judge
                   rtol: float, res: P.EvalResult, where: str) -> None:
        """An output that failed the fixed tolerance is judged against the exact (float64) answer
        (kforge.runtime.problem, "tolerance arbitration"). Returns when it passes; raises Mismatch, the
        original or the arbitration's, when it does not."""
        if exc.guard not in ARBITRATED_GUARDS or not exc.near_miss:
            raise exc  # not a tolerance failure, or too far off for rounding to explain: no float64 forward
        try:
            exact = exact_reference(ref_model, inputs)
        except Exception as err:  # noqa: BLE001 - no float64 model (dtype-pinned ops, memory): the verdict stands
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise Mismatch(exc.guard, f"{exc} (no float64 arbitration: {type(err).__name__}: {str(err)[:160]})",
                           exc.max_abs, exc.max_rel) from exc
        try:
            measured = compare_exact(out, ref_out, exact, atol, rtol)
        except Mismatch as err:
            raise Mismatch(err.guard, f"{exc}; against the exact answer: {err}", exc.max_abs, exc.max_rel) from exc
        finally:
            del exact
        res.flags.append("tolerance_arbitrated")
        notes = res.diagnostics.setdefault("arbitrated", [])
        if len(notes) < 8:
            notes.append({"where": where, "fixed_check": str(exc)[:200], **measured})

    def _correctness(self: Judge, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,  # type: ignore[misc]  # a mixin of Judge
                     trials: int, atol: float, rtol: float, label: str) -> bool:
        dev = self.device
        # Where a trial's time goes, summed over the phase (diagnostics.correctness_split_s): drawing
        # the inputs and the reference's forward with its digests, the sandbox's round trips, taking
        # the tensors it sent back, and the judge's checks (digest after, comparison, arbitration).
        split = res.diagnostics.setdefault("correctness_split_s", {})
        clock = time.perf_counter

        def spent(part: str, since: float) -> float:
            now = clock()
            split[part] = round(split.get(part, 0.0) + now - since, 4)
            return now
        dists = list(DISTRIBUTIONS)
        trial = attempts = 0
        where = "" if label == "main" else f"{label} shape: "
        while trial < trials:
            # One trial under the shared lock at a time: a judge waiting to time waits for this trial,
            # not for the whole phase (docs/evaluation.md, "Judges sharing a GPU").
            with self.lock.hold(exclusive=False):
                attempts += 1
                if attempts > trials * 4 or not dists:
                    raise RuntimeError(f"{where}the reference gives NaN/Inf on every input distribution")
                dist = dists[trial % len(dists)]
                seed = self._sysrand.getrandbits(63)
                key = self._sysrand.getrandbits(62)  # the digest's key: never leaves the judge
                t = clock()
                inputs, ref_out, before = self._reference_outputs(req, module, ref_model, seed, dist, key)
                t = spent("reference", t)
                ref_list = flatten_outputs(ref_out)
                if not all_finite(ref_list):
                    dists.remove(dist)  # the reference itself can't take these inputs (logs, probabilities)
                    continue
                res.seeds.append(seed)
                res.distributions.append(dist if label == "main" else f"{label}/{dist}")
                poison = [t.numel() * t.element_size() for t in ref_list if isinstance(t, torch.Tensor)]
                runs = 2 if trial == 0 and label == "main" else 1  # twice on one input: races, uninitialised memory
                cap = reply_cap(ref_list, inputs)
                first: Any = None
                for run in range(runs):
                    t = clock()
                    reply = sb.call({"cmd": "run", "poison": poison, "return_inputs": not req.inplace, "max_bytes": cap},
                                    timeout=req.run_timeout_s, tensors={"inputs": inputs})
                    t = spent("sandbox", t)
                    res.trials_run += 1 if run == 0 else 0
                    if not reply.get("ok"):
                        self._fail_reply(res, reply)
                        res.error = f"{where}{res.error}"
                        return False
                    out_payload = reply.get("outputs")
                    bad_device = _payload_devices(out_payload) - {dev.type}
                    if bad_device:
                        res.status, res.guard = P.INCORRECT, "output_device"
                        res.error = f"{where}an output is on {sorted(bad_device)}, expected {dev.type}"
                        return False
                    if before is not None:  # the inputs as the candidate left them, by digest: no second copy kept
                        after = self._decode(sb, reply.get("inputs_after"), cap, f"{where}the returned inputs")
                        t = spent("decode", t)
                        changed = [i for i, (a, b) in enumerate(zip(digest(list(after), key), before)) if a != b]
                        if len(after) != len(before):
                            changed = changed or [min(len(after), len(before))]
                        del after
                        if changed:
                            res.status, res.guard = P.INCORRECT, "input_mutation"
                            res.error = f"{where}the candidate modified input {changed[0]}, which the problem does not allow"
                            return False
                    t = spent("check", t)
                    out = self._decode(sb, out_payload, cap, f"{where}the output")
                    t = spent("decode", t)
                    try:
                        if run == 0:
                            try:
                                abs_err, rel_err = compare(out, ref_out, atol, rtol, dev.type)
                                res.max_abs_err = max(res.max_abs_err or 0.0, abs_err)
                                res.max_rel_err = max(res.max_rel_err or 0.0, rel_err)
                            except Mismatch as exc:
                                self._arbitrate(exc, ref_model, inputs, out, ref_out, atol, rtol, res,
                                                f"{label}/{dist}")
                                res.max_abs_err = max(res.max_abs_err or 0.0, exc.max_abs or 0.0)
                                res.max_rel_err = max(res.max_rel_err or 0.0, exc.max_rel or 0.0)
                            first = out if runs == 2 else None
                        else:
                            try:
                                compare(out, first, atol * 1e-2, rtol * 1e-2, dev.type)
                            except Mismatch as exc:
                                raise Mismatch("nondeterministic", "two runs on the same input disagree "
                                               f"({exc}): a race or uninitialised memory") from exc
                    except Mismatch as exc:
                        res.status = P.INCORRECT
                        res.guard = exc.guard if label == "main" else f"heldout_{exc.guard}"
                        res.error = f"{where}trial {trial + 1} ({dist} inputs): {exc}"
                        res.mismatch = str(exc)
                        if exc.max_abs is not None:
                            res.max_abs_err = exc.max_abs
                            res.max_rel_err = exc.max_rel
                        return False
                    finally:
                        spent("check", t)
                    del out
                del first, inputs, ref_out, ref_list
                res.trials_passed += 1
                trial += 1
        return True
