#!/usr/bin/env python
"""Check kforge's built-in problems against their reference solutions (Triton by default).

For every problem file in src/kforge/problems/builtin, load it from its path, set
each shape's module globals (from its KFORGE metadata), build Model and the
solution's ModelNew after the same torch.manual_seed, and compare outputs over
3 trials of fresh standard-normal inputs plus one trial with floating inputs
scaled by 50 (wide range), with torch.allclose at the problem's tolerance
(KFORGE "atol"/"rtol", default 1e-4/1e-4 for fp32) plus a relative-L2 bound.
One line is printed per problem/shape.

With --candidates, the quickstart candidates in recipes/quickstart/candidates
are each run in a subprocess (10 s timeout; crash.py/hang.py never run in this
process) and their outcome is compared with what their label means.

CPU (no GPU):  TRITON_INTERPRET=1 python benchmarks/check_solutions.py
GPU:           python benchmarks/check_solutions.py --device cuda --shape main
CUDA C++:      python benchmarks/check_solutions.py --device cuda --shape main --backend cuda
CUTLASS:       PYTHONPATH=plugins/kforge-cutlass/src python benchmarks/check_solutions.py --device cuda \
                   --solutions-dir plugins/kforge-cutlass/src/kforge_cutlass/solutions
(a backend other than triton checks only the problems that have a solution in it)

Standalone: imports only torch, triton (through the loaded files), importlib
and the standard library.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS_DIR = ROOT / "src" / "kforge" / "problems" / "builtin"
SOLUTIONS_ROOT = PROBLEMS_DIR / "solutions"
SOLUTIONS_DIR = SOLUTIONS_ROOT / "triton"  # --backend / --solutions-dir choose another
CANDIDATES_DIR = ROOT / "recipes" / "quickstart" / "candidates"

ATOL = 1e-4
RTOL = 1e-4
REL_L2 = 1e-3
N_TRIALS = 3
WIDE_SCALE = 50.0
MODEL_SEED = 1234

# What each quickstart candidate label is meant to demonstrate.
EXPECTED = {
    "correct": "pass",
    "one_pass": "pass",
    "wrong_slope": "fail",
    "naive": "wide_fail",
    "syntax_error": "syntax_error",
    "crash": "crash",
    "hang": "timeout",
}

RESULT_TAG = "KFORGE_CHECK_RESULT "


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # triton.jit reads kernel source through the module
    spec.loader.exec_module(mod)
    return mod


def read_kforge(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "KFORGE" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def shapes_for(meta, which: str):
    if not meta or "shapes" not in meta:
        return [{}]  # problem without metadata: its module defaults
    s = meta["shapes"].get(which)
    if s is None:
        return []
    return list(s) if isinstance(s, list) else [s]


def fmt_shape(shape: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in shape.items()) + "}"


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def to_device(x, device):
    return x.to(device) if isinstance(x, torch.Tensor) else x


def compare(got, expected, atol, rtol):
    """Return (ok, reason, max_abs_err)."""
    if not isinstance(got, torch.Tensor):
        return False, f"output is {type(got).__name__}, not a tensor", math.inf
    if got.shape != expected.shape:
        return False, f"shape {tuple(got.shape)} != {tuple(expected.shape)}", math.inf
    if got.dtype != expected.dtype:
        return False, f"dtype {got.dtype} != {expected.dtype}", math.inf
    if got.device != expected.device:
        return False, f"device {got.device} != {expected.device}", math.inf
    g, e = got.double(), expected.double()
    bad_nonfinite = (~torch.isfinite(g)) & torch.isfinite(e)
    if bad_nonfinite.any():
        return False, f"{int(bad_nonfinite.sum())} non-finite values", math.inf
    finite = torch.isfinite(e)
    err = (g - e).abs()[finite]
    max_err = float(err.max()) if err.numel() else 0.0
    if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        tol = atol + rtol * e.abs()[finite]
        n_bad = int((err > tol).sum())
        return False, f"mismatch ({n_bad}/{e.numel()} elements)", max_err
    # allclose alone passes all-zero output when every reference value is below atol
    # (softmax over a long row); also bound the relative L2 error of the whole tensor.
    ref_norm = float(e[finite].norm())
    if ref_norm > 0 and float(err.norm()) > REL_L2 * ref_norm:
        return False, f"relative L2 error {float(err.norm()) / ref_norm:.1e} > {REL_L2:g}", max_err
    return True, "ok", max_err


def tolerances(meta):
    """(atol, rtol): the problem's KFORGE "atol"/"rtol" if given, else the fp32 defaults."""
    meta = meta or {}
    return float(meta.get("atol", ATOL)), float(meta.get("rtol", RTOL))


def rms(t: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    t = t.double()
    t = t[torch.isfinite(t)]
    return float(t.pow(2).mean().sqrt()) if t.numel() else 0.0


def check_pair(problem, cand, shape: dict, device: str, seed_base: int = 1000,
               atol: float = ATOL, rtol: float = RTOL):
    """Run Model vs ModelNew on one shape. Returns a result dict."""
    for k, v in shape.items():
        setattr(problem, k, v)
    init = problem.get_init_inputs()
    torch.manual_seed(MODEL_SEED)
    ref_model = problem.Model(*init).to(device).eval()
    torch.manual_seed(MODEL_SEED)
    new_model = cand.ModelNew(*init).to(device).eval()

    notes = []
    ref_sd, new_sd = ref_model.state_dict(), new_model.state_dict()
    if set(ref_sd) != set(new_sd) or any(
        not torch.equal(ref_sd[k], new_sd[k]) for k in ref_sd if k in new_sd
    ):
        notes.append("parameters differ from Model's")

    trials, max_err, run_s = [], 0.0, 0.0
    n_normal_ok = 0
    wide_ok = None
    normal_rms = []
    for t in range(N_TRIALS + 1):
        wide = t == N_TRIALS
        torch.manual_seed(seed_base + t)
        inputs = problem.get_inputs()
        if wide:
            inputs = [x * WIDE_SCALE if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                      for x in inputs]
        inputs = [to_device(x, device) for x in inputs]
        ref_inputs = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        snapshot = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        with torch.no_grad():
            expected = ref_model(*ref_inputs)
            sync(device)
            t0 = time.perf_counter()
            got = new_model(*inputs)
            sync(device)
            run_s += time.perf_counter() - t0
        trial_atol = atol
        if wide:
            # Outputs that grow with the inputs (relu, rowsum, matmul) get the absolute
            # tolerance scaled by how much the output RMS grew over the normal trials
            # (taken as at least 1); softmax/layernorm outputs do not grow, so no change.
            base = max(1.0, sum(normal_rms) / max(1, len(normal_rms)))
            trial_atol = atol * max(1.0, rms(expected) / base)
        else:
            normal_rms.append(rms(expected))
        ok, reason, err = compare(got, expected, trial_atol, rtol)
        if ok and any(isinstance(a, torch.Tensor) and not torch.equal(a, b)
                      for a, b in zip(inputs, snapshot)):
            ok, reason = False, "modified its inputs"
        if math.isfinite(err):
            max_err = max(max_err, err)
        label = ("wide:" if wide else "") + (reason if not ok else "ok")
        trials.append(label)
        if wide:
            wide_ok = ok
        elif ok:
            n_normal_ok += 1
        del expected, got, inputs, ref_inputs, snapshot
    if device == "cuda":
        torch.cuda.empty_cache()

    normal_ok = n_normal_ok == N_TRIALS
    if normal_ok and wide_ok and not notes:
        outcome = "pass"
    elif normal_ok and not wide_ok:
        outcome = "wide_fail"
    else:
        outcome = "fail"
    return {"outcome": outcome, "trials": trials, "max_err": max_err,
            "run_s": run_s, "notes": notes}


def result_line(pid, which, shape, res, extra=""):
    status = {"pass": "PASS"}.get(res["outcome"], "FAIL")
    notes = ("  notes=" + "; ".join(res["notes"])) if res.get("notes") else ""
    return (f"{pid:<18} {which:<8} {fmt_shape(shape):<52} {status}  "
            f"trials=[{', '.join(res['trials'])}]  max_err={res['max_err']:.2e}  "
            f"time={res['run_s']:.2f}s{notes}{extra}")


def problem_files(only=None):
    files = sorted(p for p in PROBLEMS_DIR.glob("*.py") if not p.name.startswith("_"))
    if only:
        files = [p for p in files if p.stem in only]
    return files


def run_solutions(args) -> int:
    failures = 0
    solutions_dir = Path(args.solutions_dir) if args.solutions_dir else SOLUTIONS_ROOT / args.backend
    for path in problem_files(args.problems):
        pid = path.stem
        sol_path = solutions_dir / f"{pid}.py"
        if not sol_path.exists() and solutions_dir != SOLUTIONS_DIR:
            continue  # only the Triton set covers every problem
        if not sol_path.exists():
            print(f"{pid:<18} {args.shape:<8} NO SOLUTION at {sol_path.relative_to(ROOT)}")
            failures += 1
            continue
        meta = read_kforge(path)
        atol, rtol = tolerances(meta)
        problem = load_module(path, f"kforge_check_problem_{pid}")
        cand = load_module(sol_path, f"kforge_check_solution_{pid}")
        for i, shape in enumerate(shapes_for(meta, args.shape)):
            which = args.shape if args.shape != "heldout" else f"heldout{i}"
            try:
                res = check_pair(problem, cand, shape, args.device, atol=atol, rtol=rtol)
            except Exception as e:  # report and go on to the next problem/shape
                res = {"outcome": "fail", "trials": [f"error: {type(e).__name__}: {e}"],
                       "max_err": math.inf, "run_s": 0.0, "notes": []}
            if res["outcome"] != "pass":
                failures += 1
            print(result_line(pid, which, shape, res), flush=True)
    return failures


def run_one_candidate(args) -> int:
    """Child-process mode: check one candidate file, print one tagged JSON line."""
    path = Path(args.run_candidate)
    pid = args.problem_id
    try:
        compile(path.read_text(), str(path), "exec")
    except SyntaxError as e:
        print(RESULT_TAG + json.dumps({"outcome": "syntax_error", "detail": f"line {e.lineno}: {e.msg}"}))
        return 0
    prob_path = PROBLEMS_DIR / f"{pid}.py"
    meta = read_kforge(prob_path)
    atol, rtol = tolerances(meta)
    problem = load_module(prob_path, f"kforge_check_problem_{pid}")
    results = []
    try:
        cand = load_module(path, f"kforge_check_candidate_{pid}_{path.stem}")
        for shape in shapes_for(meta, args.shape):
            results.append((shape, check_pair(problem, cand, shape, args.device,
                                              atol=atol, rtol=rtol)))
    except Exception as e:
        print(RESULT_TAG + json.dumps({"outcome": "error", "detail": f"{type(e).__name__}: {e}"}))
        return 0
    outcomes = [r["outcome"] for _, r in results]
    outcome = ("pass" if all(o == "pass" for o in outcomes)
               else "fail" if "fail" in outcomes else "wide_fail")
    print(RESULT_TAG + json.dumps({"outcome": outcome, "detail": "; ".join(
        f"{fmt_shape(s)} trials=[{', '.join(r['trials'])}] time={r['run_s']:.2f}s" for s, r in results)}))
    return 0


def run_candidates(args) -> int:
    failures = 0
    if not CANDIDATES_DIR.is_dir():
        print(f"no candidates at {CANDIDATES_DIR}")
        return 1
    for pdir in sorted(p for p in CANDIDATES_DIR.iterdir() if p.is_dir()):
        if args.problems and pdir.name not in args.problems:
            continue
        for cpath in sorted(pdir.glob("*.py")):
            label = cpath.stem
            cmd = [sys.executable, str(Path(__file__).resolve()), "--run-candidate", str(cpath),
                   "--problem-id", pdir.name, "--shape", args.shape, "--device", args.device]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                      env=os.environ.copy())
                elapsed = time.perf_counter() - t0
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)), None)
                if proc.returncode < 0:
                    outcome, detail = "crash", f"killed by signal {-proc.returncode}"
                elif line is None:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    outcome, detail = "error", f"rc={proc.returncode}: {tail}"
                else:
                    r = json.loads(line[len(RESULT_TAG):])
                    outcome, detail = r["outcome"], r.get("detail", "")
            except subprocess.TimeoutExpired:
                elapsed = time.perf_counter() - t0
                outcome, detail = "timeout", f"killed after {args.timeout:.0f}s"
            expected = EXPECTED.get(label)
            verdict = ("as expected" if outcome == expected
                       else "UNEXPECTED" if expected else "(no expectation)")
            if expected and outcome != expected:
                failures += 1
            print(f"{pdir.name + '/' + label:<26} {outcome:<13} expected={expected or '-':<13} "
                  f"{verdict:<12} wall={elapsed:.1f}s  {detail}", flush=True)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["small", "main", "heldout"], default="small")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--problems", nargs="*", help="only these problem ids")
    ap.add_argument("--backend", default="triton",
                    help="check src/kforge/problems/builtin/solutions/<backend> (default triton)")
    ap.add_argument("--solutions-dir", help="check the <problem_id>.py solutions in this folder instead")
    ap.add_argument("--candidates", action="store_true",
                    help="check the quickstart candidates (each in a subprocess) instead of the solutions")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-candidate timeout in seconds")
    ap.add_argument("--run-candidate", help=argparse.SUPPRESS)
    ap.add_argument("--problem-id", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.device == "cpu" and (args.backend != "triton" or args.solutions_dir):
        print("note: CUDA C++ and CUTLASS solutions run on a GPU only (--device cuda)", file=sys.stderr)
    elif args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("note: --device cpu needs TRITON_INTERPRET=1 for Triton kernels", file=sys.stderr)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    if args.run_candidate:
        return run_one_candidate(args)
    if args.candidates:
        failures = run_candidates(args)
    else:
        failures = run_solutions(args)
    print(f"{'all OK' if failures == 0 else f'{failures} failure(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
