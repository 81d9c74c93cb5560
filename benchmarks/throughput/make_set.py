"""Build issue #9's throughput candidate set: a fixed, mixed-backend set that a replay generator replays.

    python benchmarks/throughput/make_set.py OUT_SET_DIR

Deterministic: the same checkout gives the same files (the manifest records each file's hash). The set
is derived from the built-in example solutions:

- Triton: for each problem in TRITON_PROBLEMS (env ``SET_PROBLEMS`` overrides, comma-separated), the
  example solution from ``src/kforge/problems/builtin/solutions/triton/`` plus variants made by
  explicit edits:
  * honest, still correct: ``num_warps`` changed (4 <-> 8) or a block size halved, found with the
    ``tune`` generator's AST site finder, so each is distinct code (distinct hash, distinct kernel);
  * incorrect: an off-by-one mask (the last element or column is never written or read), or a wrong
    constant (1/sqrt(2) replaced by sqrt(2/pi), exp instead of exp2 ...) - what LLM kernels get wrong;
  * compile failures: a Python syntax error (a missing colon), or a Triton API that does not exist
    (``tl.libdevice.*``, an old name), which fails when Triton compiles the kernel at its first launch
    on a GPU (on the CPU interpreter it is an AttributeError, so a runtime_error there).
- CUDA (``load_inline``): up to CUDA_N candidates (env, default 8): the CUDA example solutions in
  ``solutions/cuda/`` where they exist (first two by PROBLEM_ORDER), else built-in templates below,
  plus variants: half the threads per block (correct; from the first solution where one named constant
  sets them, else a template), the element count one short (incorrect: the last element is never
  written) and a wrong constant (incorrect, template), an undeclared identifier in a kernel and a
  missing semicolon (nvcc errors). Every distinct
  CUDA candidate is one ~30-60 s nvcc build, which is why there are few of them.

Layout written (the replay generator's ``<problem_id>/*.py``, one tree per backend because a kforge run
has one backend)::

    OUT/triton/<problem>/NN-<variant>.py     OUT/cuda/<problem>/NN-<variant>.py
    OUT/manifest.json                        every candidate: id, backend, problem, intended verdict, sha
    OUT/triton.toml, OUT/cuda.toml           recipes that replay each tree (best-of-n, n = files per problem)
    OUT/mixed/<problem>/<backend>-NN-....py  + OUT/mixed.toml: both trees in one run (backend "auto")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from kforge.api import code_hash  # noqa: E402
from kforge.checks import check_candidate  # noqa: E402
from kforge.generators.tune import apply_changes, find_sites  # noqa: E402

SOLUTIONS = ROOT / "src" / "kforge" / "problems" / "builtin" / "solutions"
TRITON_PROBLEMS = ["relu", "gelu", "silu", "softmax", "logsoftmax", "layernorm", "rmsnorm", "rowsum", "matmul",
                   "bias_gelu_residual", "max_reduce", "cumsum"]
# Which problems get a CUDA candidate first (cheap, memory-bound ones).
PROBLEM_ORDER = ["relu", "gelu", "silu", "softmax", "rowsum", "layernorm", "rmsnorm", "logsoftmax", "cumsum",
                 "bias_gelu_residual", "max_reduce", "residual_rmsnorm", "matmul"]

# --------------------------------------------------------------------------------------------------
# Triton edits. Each returns the new source or None when it does not apply to this file.
Edit = Callable[[str], "str | None"]


def _sub(old: str, new: str, which: str = "first") -> Edit:
    def edit(src: str) -> str | None:
        if old not in src:
            return None
        if which == "all":
            return src.replace(old, new)
        i = src.find(old) if which == "first" else src.rfind(old)
        return src[:i] + new + src[i + len(old):]
    return edit


def _regex(pattern: str, repl: str, which: str = "last") -> Edit:
    rx = re.compile(pattern, re.M)

    def edit(src: str) -> str | None:
        hits = list(rx.finditer(src))
        if not hits:
            return None
        m = hits[-1] if which == "last" else hits[0]
        return src[:m.start()] + m.expand(repl) + src[m.end():]
    return edit


def honest_warps(src: str) -> str | None:
    sites = [s for s in find_sites(src) if s.kind == "warps"]
    if not sites:
        return None
    return apply_changes(src, {s: (8 if s.value == 4 else 4) for s in sites})


def honest_block(src: str) -> str | None:
    sites = [s for s in find_sites(src) if s.kind == "block" and s.value >= 64 and not s.name.startswith("GROUP")]
    if not sites:
        return None
    return apply_changes(src, {sites[0]: sites[0].value // 2})


# The last ``mask = offs < X`` (the store pass of a row kernel), else the last bound in a store mask.
off_by_one = _regex(r"^([ \t]*mask = offs < )(\w+)[ \t]*$", r"\1\2 - 1")
off_by_one_store = _regex(r"(tl\.store\([^\n]*< )(\w+)(\)+)[ \t]*$", r"\1\2 - 1\3")
off_by_one_load = _regex(r"(mask=offs < )(n_cols)(,)", r"\1\2 - 1\3")
syntax_error = _regex(r"^(    def forward\(self[^\n]*\)[^\n]*):[ \t]*$", r"\1", which="first")

INCORRECT: dict[str, list[tuple[str, Edit]]] = {
    "relu": [("mask-off-by-one", off_by_one), ("leaky-slope", _sub("tl.where(x > 0, x, 0.0)", "tl.where(x > 0, x, 0.01 * x)"))],
    "gelu": [("wrong-constant", _sub("0.7071067811865476", "0.7978845608028654")), ("mask-off-by-one", off_by_one)],
    "silu": [("mask-off-by-one", off_by_one), ("wrong-constant", _sub("tl.exp(-tl.abs(x))", "tl.exp(-1.702 * tl.abs(x))"))],
    "softmax": [("exp2-for-exp", _sub("tl.exp(", "tl.exp2(", "all")), ("mask-off-by-one", off_by_one)],
    "logsoftmax": [("exp2-for-exp", _sub("tl.exp(", "tl.exp2(", "all")), ("mask-off-by-one", off_by_one)],
    # (an unbiased variance, n - 1, would be the classic bug, but at the main shape's 32768 columns it
    # moves the output by ~1e-5, inside the tolerance: it passes on a GPU, so it is not used)
    "layernorm": [("forgets-bias", _sub("y = (x - mean) * rstd * w + b", "y = (x - mean) * rstd * w")),
                  ("mask-off-by-one", off_by_one)],
    "rmsnorm": [("wrong-eps", _sub("/ n_cols + eps)", "/ n_cols + 1e-2)")), ("mask-off-by-one", off_by_one)],
    "rowsum": [("load-mask-off-by-one", off_by_one_load)],
    "matmul": [("store-mask-off-by-one", off_by_one_store), ("k-loop-drops-last-block", _sub("range(0, K, BLOCK_K)", "range(0, K - BLOCK_K, BLOCK_K)"))],
    "bias_gelu_residual": [("wrong-constant", _sub("0.7071067811865476", "0.7978845608028654")), ("mask-off-by-one", off_by_one)],
    "max_reduce": [("store-mask-off-by-one", off_by_one_store)],
    "cumsum": [("mask-off-by-one", off_by_one), ("forgets-carry", _sub("y = tl.cumsum(x, axis=0) + carry", "y = tl.cumsum(x, axis=0)"))],
}
GENERIC_INCORRECT: list[tuple[str, Edit]] = [("mask-off-by-one", off_by_one), ("store-mask-off-by-one", off_by_one_store)]


def triton_api_error(src: str) -> str | None:
    """A Triton function that does not exist in this Triton (an old or invented name)."""
    for old, new in (("tl.math.erf(", "tl.libdevice.erf("), ("tl.sqrt(", "tl.libdevice.sqrt("),
                     ("tl.exp(", "tl.libdevice.exp("), ("tl.cumsum(", "tl.libdevice.cumsum("),
                     ("tl.dot(", "tl.libdevice.dot("), ("tl.maximum(", "tl.libdevice.fmax("),
                     ("tl.where(", "tl.libdevice.select(")):
        if old in src:
            i = src.find(old)
            return src[:i] + new + src[i + len(old):]
    return None


# --------------------------------------------------------------------------------------------------
# CUDA templates (used where the repository has no CUDA example solution to start from).
_CUDA_TEMPLATE = r'''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>

constexpr int THREADS = @THREADS@;

__global__ void @NAME@_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < @BOUND@) {
        float v = x[i];
        @BODY@
    }
}

torch::Tensor @NAME@_forward(torch::Tensor x) {
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    int64_t n = xc.numel();
    int64_t blocks = (n + THREADS - 1) / THREADS;
    @NAME@_kernel<<<blocks, THREADS>>>(xc.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""

ext = load_inline(name="@EXT@", cpp_sources="torch::Tensor @NAME@_forward(torch::Tensor x);",
                  cuda_sources=CUDA_SRC, functions=["@NAME@_forward"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.@NAME@_forward(x)
'''
_BODIES = {
    "relu": "y[i] = v > 0.f ? v : 0.f;",
    "silu": "y[i] = v / (1.f + expf(-v));",
    "gelu": "y[i] = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));",
}


def cuda_template(problem: str, threads: int = 256, tag: str = "", bound: str = "n", body: str | None = None) -> str:
    src = _CUDA_TEMPLATE.replace("@THREADS@", str(threads)).replace("@BOUND@", bound)
    src = src.replace("@BODY@", body if body is not None else _BODIES[problem])
    return src.replace("@EXT@", f"kfb_{problem}_{tag or threads}").replace("@NAME@", problem)


def _rename_ext(src: str, suffix: str) -> str:
    """A derived variant's load_inline extension gets its own name (torch would rebuild it anyway)."""
    return re.sub(r'(load_inline\([^)]*?\bname\s*=\s*["\'])([\w.]+)(["\'])', lambda m: m.group(1) + m.group(2) + suffix + m.group(3),
                  src, count=1, flags=re.S)


def cuda_undeclared(src: str) -> str | None:
    """An undeclared identifier in the first __global__ kernel's body: nvcc fails."""
    m = re.search(r"__global__[^{]*\{", src)
    if not m:
        return None
    return src[:m.end()] + "\n    kforge_undeclared_counter += 1;" + src[m.end():]


def cuda_missing_semicolon(src: str) -> str | None:
    m = re.search(r"__global__[^{]*\{[^;]*?(;)", src, re.S)
    if not m:
        return None
    return src[:m.start(1)] + src[m.end(1):]


def cuda_off_by_one(src: str) -> str | None:
    """The element count one short in the host function (``n = x.numel() - 1``): the last element is never
    written, so it keeps the NaN the judge's deterministic fill puts in fresh memory."""
    m = re.search(r"\b([\w.]+\.numel\(\))", src)
    if not m:
        return None
    return src[:m.start(1)] + "(" + m.group(1) + " - 1)" + src[m.end(1):]


def cuda_honest_threads(src: str) -> str | None:
    """Half the threads per block, where one named constant sets them everywhere it is used (the launch
    names the constant): the same kernel, a different configuration."""
    for m in re.finditer(r"\b(?:constexpr|const)\s+(?:unsigned\s+)?int\s+(\w*THREADS\w*|BLOCK\w*|kThreads|kBlock\w*)"
                         r"\s*=\s*(\d+)\s*;", src):
        name, value = m.group(1), int(m.group(2))
        if value >= 64 and re.search(r"<<<[^>]*\b" + re.escape(name) + r"\b[^>]*>>>", src):
            return src[:m.start(2)] + str(value // 2) + src[m.end(2):]
    return None


# --------------------------------------------------------------------------------------------------
def _entry(backend: str, problem: str, name: str, code: str, intended: str, variant: str, source: str) -> dict:
    return {"backend": backend, "problem": problem, "name": name, "code": code, "intended": intended,
            "variant": variant, "derived_from": source}


def triton_candidates(problems: list[str]) -> tuple[list[dict], list[str]]:
    out, notes = [], []
    for k, pid in enumerate(problems):
        f = SOLUTIONS / "triton" / f"{pid}.py"
        if not f.is_file():
            notes.append(f"triton: no example solution for {pid}, skipped")
            continue
        src = f.read_text()
        rel = str(f.relative_to(ROOT))
        cands = [("original", src, "correct")]
        # One honest variant per problem (warps and block alternate), both on the first four; one
        # incorrect variant per problem, a second on every other problem. With 12 problems: 28
        # correct, ~17 incorrect, 12 compile failures.
        honest = [("warps", honest_warps), ("block", honest_block)]
        if k % 2:
            honest.reverse()
        for name, fn in honest[: 2 if k < 4 else 1]:
            new = fn(src)
            if new is not None and new != src:
                cands.append((f"honest-{name}", new, "correct"))
            else:
                notes.append(f"triton/{pid}: honest edit {name} did not apply")
        for name, fn in (INCORRECT.get(pid) or GENERIC_INCORRECT)[: 2 if k % 2 == 0 else 1]:
            new = fn(src)
            if new is not None and new != src:
                cands.append((f"incorrect-{name}", new, "incorrect"))
            else:
                notes.append(f"triton/{pid}: edit {name} did not apply")
        bad = syntax_error(src) if k % 2 == 0 else triton_api_error(src)
        label = "compile-syntax-error" if k % 2 == 0 else "compile-triton-api"
        if bad is None or bad == src:
            bad, label = syntax_error(src), "compile-syntax-error"
        if bad is not None and bad != src:
            cands.append((label, bad, "compile_error"))
        for i, (name, code, intended) in enumerate(cands):
            out.append(_entry("triton", pid, f"{i:02d}-{name}.py", code, intended, name, rel))
    return out, notes


def cuda_candidates(n: int) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    found = []
    cdir = SOLUTIONS / "cuda"
    if cdir.is_dir():
        for pid in PROBLEM_ORDER + sorted(p.stem for p in cdir.glob("*.py")):
            f = cdir / f"{pid}.py"
            if f.is_file() and pid not in [x[0] for x in found]:
                found.append((pid, f.read_text(), str(f.relative_to(ROOT))))
    if not found:
        notes.append("cuda: no example solutions in solutions/cuda/: the CUDA candidates are built-in templates")
    originals = found[:2]
    for pid in ("relu", "silu"):
        if len(originals) < 2 and pid not in [o[0] for o in originals]:
            originals.append((pid, cuda_template(pid), "template"))
    o1, o2 = originals[0], originals[1]
    plan: list[tuple[str, str, str, str, str]] = []  # problem, variant, code, intended, derived_from
    plan.append((o1[0], "original", o1[1], "correct", o1[2]))
    broken = cuda_off_by_one(o1[1])
    if broken is None:
        notes.append(f"cuda/{o1[0]}: no numel() found for the off-by-one edit; used the relu template")
        plan.append(("relu", "incorrect-one-element-short", cuda_template("relu", bound="n - 1", tag="obo"),
                     "incorrect", "template"))
    else:
        plan.append((o1[0], "incorrect-one-element-short", broken, "incorrect", o1[2]))
    bad = cuda_undeclared(o2[1]) or cuda_undeclared(cuda_template("silu"))
    plan.append((o2[0] if cuda_undeclared(o2[1]) else "silu", "compile-undeclared-identifier", bad, "compile_error",
                 o2[2] if cuda_undeclared(o2[1]) else "template"))
    plan.append((o2[0], "original", o2[1], "correct", o2[2]))
    honest = cuda_honest_threads(o1[1])
    if honest is not None and o1[2] != "template":
        plan.append((o1[0], "honest-half-threads", honest, "correct", o1[2]))
    else:
        plan.append(("relu", "honest-threads-128", cuda_template("relu", threads=128), "correct", "template"))
    plan.append(("gelu", "incorrect-wrong-constant",
                 cuda_template("gelu", tag="wc", body="y[i] = 0.5f * v * (1.f + erff(v * 0.7978845608028654f));"),
                 "incorrect", "template"))
    plan.append(("silu", "compile-missing-semicolon", cuda_missing_semicolon(cuda_template("silu", tag="ms")),
                 "compile_error", "template"))
    plan.append(("gelu", "original-template", cuda_template("gelu"), "correct", "template"))
    out, seen = [], set()
    for pid, variant, code, intended, src in plan[:n]:
        if src != "template" and variant != "original":
            code = _rename_ext(code, "_" + variant.split("-", 1)[1].replace("-", "_"))
        key = (pid, code_hash(code))
        if key in seen:
            notes.append(f"cuda/{pid}/{variant}: duplicate of an earlier candidate, dropped")
            continue
        seen.add(key)
        out.append(_entry("cuda", pid, "", code, intended, variant, src))
    counts: dict[str, int] = {}
    for e in out:
        i = counts.get(e["problem"], 0)
        counts[e["problem"]] = i + 1
        e["name"] = f"{i:02d}-{e['variant']}.py"
    return out, notes


RECIPE = """# Issue #9's throughput benchmark: replays the {backend} part of the set (made by make_set.py).
[run]
name = "throughput-{backend}"
seed = 0
out = "runs"

[problems]
source = "builtin"
ids = {ids}
shapes = "auto"          # main on a GPU, small on the CPU

[backend]
name = "{backend}"

[generator]
name = "replay"
path = "{path}"

[search]
name = "best-of-n"
n = {n}

[executor]
name = "local"

[budget]
candidates = {count}
"""


def write_set(out: Path, problems: list[str] | None = None, cuda_n: int | None = None) -> dict:
    problems = problems or [p for p in os.environ.get("SET_PROBLEMS", "").split(",") if p] or TRITON_PROBLEMS
    cuda_n = int(os.environ.get("CUDA_N", "8")) if cuda_n is None else cuda_n
    tri, notes = triton_candidates(problems)
    cu, notes2 = cuda_candidates(cuda_n) if cuda_n > 0 else ([], [])
    notes += notes2
    if out.exists():
        shutil.rmtree(out)
    entries = []
    for e in tri + cu:
        problems_checked = check_candidate(e["code"], e["backend"])
        if problems_checked:
            notes.append(f"{e['backend']}/{e['problem']}/{e['name']}: rejected by the static checks, dropped: "
                         f"{problems_checked[0]}")
            continue
        cid = f"{e['backend']}/{e['problem']}/{e['name']}"
        for path in (out / cid, out / "mixed" / e["problem"] / f"{e['backend']}-{e['name']}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(e["code"])
        entries.append({"id": cid, "mixed_id": f"mixed/{e['problem']}/{e['backend']}-{e['name']}",
                        **{k: v for k, v in e.items() if k != "code"},
                        "code_hash": code_hash(e["code"]), "sha256": hashlib.sha256(e["code"].encode()).hexdigest()})
    hashes = [(e["problem"], e["code_hash"]) for e in entries]
    assert len(hashes) == len(set(hashes)), "two candidates of one problem normalise to the same code"
    for backend in ("triton", "cuda", "mixed"):
        mine = [e for e in entries if backend in ("mixed", e["backend"])]
        if not mine:
            continue
        per = {}
        for e in mine:
            per[e["problem"]] = per.get(e["problem"], 0) + 1
        # the mixed tree is one run with the auto backend: each candidate judged in its own language
        (out / f"{backend}.toml").write_text(RECIPE.format(
            backend="auto" if backend == "mixed" else backend, ids=json.dumps(sorted(per)), path=backend,
            n=max(per.values()), count=len(mine)))
    manifest = {"entries": entries, "notes": notes, "problems": sorted({e["problem"] for e in entries}),
                "counts": _counts(entries)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _counts(entries: list[dict]) -> dict[str, int]:
    c: dict[str, int] = {}
    for e in entries:
        k = f"{e['backend']}/{e['intended']}"
        c[k] = c.get(k, 0) + 1
    c["total"] = len(entries)
    return c


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "throughput-set")
    m = write_set(out)
    for n in m["notes"]:
        print("note:", n)
    print(f"{m['counts']['total']} candidates over {len(m['problems'])} problems in {out}: "
          + ", ".join(f"{k}={v}" for k, v in sorted(m["counts"].items()) if k != "total"))


if __name__ == "__main__":
    main()
