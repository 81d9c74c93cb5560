"""Problems inside the judge: load a KernelBench-format source with a shape, draw inputs, compare."""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

from kforge.runtime.meta import eval_expr, problem_metadata  # noqa: F401 - re-exported
from kforge.runtime.wire import Foreign

DEFAULT_TOLERANCE = {"float32": 1e-4, "float64": 1e-7, "float16": 1e-2, "bfloat16": 1e-2}
DISTRIBUTIONS = ("problem", "normal", "wide")

_SRC_DIR = Path(tempfile.gettempdir()) / "kforge-problems"


def load_problem_module(source: str, problem_id: str, shape: dict[str, Any]) -> types.ModuleType:
    """Execute a problem's source as a module (from a real file, so ``inspect`` works) and apply a shape.

    A shape's keys are the module-level constants that ``get_inputs()``/``get_init_inputs()`` read.
    """
    _SRC_DIR.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = _SRC_DIR / f"problem_{digest}.py"
    if not path.exists():
        path.write_text(source)
    name = f"kforge_problem_{digest}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    for key, value in shape.items():
        if key not in module.__dict__:
            raise KeyError(f"shape sets {key!r}, which problem {problem_id} does not define at module level")
        module.__dict__[key] = value
    for attr in ("Model", "get_inputs", "get_init_inputs"):
        if attr not in module.__dict__:
            raise AttributeError(f"problem {problem_id} does not define {attr}")
    return module


def draw_inputs(module: types.ModuleType, seed: int, distribution: str, dtype: torch.dtype,
                device: torch.device) -> list[Any]:
    """Inputs for one trial: the problem's ``get_inputs()`` under ``seed``, then, for floating tensors,
    values redrawn from ``distribution`` (same shapes): 'problem' keeps them, 'normal' is signed
    standard normal, 'wide' spans magnitudes 1e-3..1e2 with random signs."""
    torch.manual_seed(seed)
    with device:  # factory calls in get_inputs() allocate on the device: no host round trip for big inputs
        inputs = list(module.get_inputs())
    gen = torch.Generator(device=device).manual_seed(seed ^ 0x5DEECE66D)
    out: list[Any] = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.detach().to(device)
            if distribution == "normal":
                x = torch.randn(x.shape, generator=gen, dtype=torch.float32, device=device)
            elif distribution == "wide":
                mag = torch.pow(10.0, torch.empty(x.shape, device=device).uniform_(-3.0, 2.0, generator=gen))
                sign = torch.where(torch.rand(x.shape, generator=gen, device=device) < 0.5, -1.0, 1.0)
                x = mag * sign
            x = x.to(dtype=dtype, device=device)
        elif isinstance(x, torch.Tensor):
            x = x.to(device)
        out.append(x)
    return out


def clone_inputs(inputs: list[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


def flatten_outputs(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def all_finite(outputs: list[Any]) -> bool:
    return all(not (isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all())
               for t in outputs)


class Mismatch(Exception):
    def __init__(self, guard: str, message: str, max_abs: float | None = None, max_rel: float | None = None,
                 near_miss: bool = False):
        super().__init__(message)
        self.guard, self.max_abs, self.max_rel = guard, max_abs, max_rel
        # Close enough that honest rounding could explain it: worth the arbitration (ARBITRATE_AT_MOST)
        self.near_miss = near_miss


# Elements compared per pass: the float64 temporaries of one pass stay near 1 GiB whatever the output's
# size (a 400M-element output compared whole took ~20 GiB of them).
COMPARE_CHUNK = 1 << 24


def _chunk(t: torch.Tensor, lo: int, device: torch.device) -> torch.Tensor:
    """Elements lo..lo+COMPARE_CHUNK of a flat tensor as float64 on ``device``: an output that lives
    elsewhere (the host, another process's staging) is moved a chunk at a time, never whole."""
    return t[lo:lo + COMPARE_CHUNK].to(device).double()


def _float_stats(o: torch.Tensor, r: torch.Tensor, atol: float, rtol: float) -> dict[str, Any]:
    """Float64 comparison of ``o`` with ``r`` (same shape), chunk by chunk: NaN/Inf where the
    reference is finite, max abs and relative error, elements over atol + rtol*|r|, and the squared L2
    norms of the error and of the reference over its finite elements."""
    o, r = o.reshape(-1), r.reshape(-1)
    n = r.numel()
    zero = torch.zeros((), dtype=torch.float64, device=r.device)
    nonfinite = over = torch.zeros((), dtype=torch.int64, device=r.device)
    max_abs = max_rel = err_sq = ref_sq = zero
    floor = max(atol, 1e-12)
    for lo in range(0, n, COMPARE_CHUNK):
        oc, rc = _chunk(o, lo, r.device), _chunk(r, lo, r.device)
        finite = torch.isfinite(rc)
        nonfinite = nonfinite + (~torch.isfinite(oc) & finite).sum()
        diff = torch.where(finite, (oc - rc).abs(), 0.0)
        rabs = rc.abs()
        max_abs = torch.maximum(max_abs, diff.max())
        max_rel = torch.maximum(max_rel, (diff / rabs.clamp_min(floor)).max())
        over = over + (diff > atol + rtol * rabs).sum()
        err_sq = err_sq + torch.where(finite, diff * diff, 0.0).sum()
        ref_sq = ref_sq + torch.where(finite, rc * rc, 0.0).sum()
    vals = torch.stack([nonfinite.double(), max_abs, max_rel, over.double(), err_sq, ref_sq]).tolist()
    return {"nonfinite": int(vals[0]), "max_abs": vals[1], "max_rel": vals[2], "over": int(vals[3]),
            "err_sq": vals[4], "ref_sq": vals[5]}


def _pairs(out: Any, ref: Any) -> list[tuple[str, Any, Any]]:
    """(label, output, reference) per output, after the checks of structure, type, shape and dtype."""
    outs, refs = flatten_outputs(out), flatten_outputs(ref)
    if len(outs) != len(refs):
        raise Mismatch("output_structure", f"returned {len(outs)} outputs, expected {len(refs)}")
    pairs = []
    for i, (o, r) in enumerate(zip(outs, refs)):
        where = f"output {i}" if len(refs) > 1 else "output"
        if isinstance(o, Foreign):
            raise Mismatch("output_type", f"{where} is {o!r}, not a plain torch.Tensor")
        if isinstance(r, torch.Tensor):
            if not isinstance(o, torch.Tensor):
                raise Mismatch("output_type", f"{where} is {type(o).__name__}, not a torch.Tensor")
            if tuple(o.shape) != tuple(r.shape):
                raise Mismatch("output_shape", f"{where} has shape {tuple(o.shape)}, expected {tuple(r.shape)}")
            if o.dtype != r.dtype:
                raise Mismatch("output_dtype", f"{where} has dtype {o.dtype}, expected {r.dtype}")
        pairs.append((where, o, r))
    return pairs


def compare(out: Any, ref: Any, atol: float, rtol: float, expect_device: str) -> tuple[float, float]:
    """Raise Mismatch unless ``out`` matches ``ref``; return (max abs error, max relative error).

    Besides elementwise allclose, the relative L2 error must be under ``rtol``: a candidate that
    returns zeros fails even where every reference value is below ``atol``. An output may live on
    another device than the reference (the host): it is compared a chunk at a time.
    """
    worst_abs = worst_rel = 0.0
    for where, o, r in _pairs(out, ref):
        if not isinstance(r, torch.Tensor):
            if o != r:
                raise Mismatch("tolerance", f"{where} is {o!r}, expected {r!r}")
            continue
        if not r.is_floating_point():
            if not torch.equal(o.to(r.device), r):
                raise Mismatch("tolerance", f"{where} differs from the reference in "
                               f"{int((o.to(r.device) != r).sum())} elements")
            continue
        s = _float_stats(o, r, atol, rtol)
        if s["nonfinite"]:
            raise Mismatch("nonfinite", f"{where} has {s['nonfinite']} NaN/Inf values where the reference is finite")
        max_abs, max_rel = s["max_abs"], s["max_rel"]
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        if s["over"]:
            raise Mismatch("tolerance", f"{where}: {s['over']} of {r.numel()} elements off by more than atol={atol:g}, "
                           f"rtol={rtol:g} (max abs error {max_abs:.3g})", max_abs, max_rel,
                           near_miss=s["over"] <= ARBITRATE_AT_MOST * r.numel())
        ref_norm, err_norm = math.sqrt(s["ref_sq"]), math.sqrt(s["err_sq"])
        if ref_norm > 0 and err_norm / ref_norm > rtol and err_norm > 0:
            raise Mismatch("relative_error", f"{where}: relative L2 error {err_norm / ref_norm:.3g} exceeds {rtol:g}",
                           max_abs, max_rel, near_miss=err_norm / ref_norm <= ARBITRATE_L2_AT_MOST * rtol)
    return worst_abs, worst_rel


# The tolerance arbitration (docs/evaluation.md, "Tolerances"). A fixed elementwise atol/rtol rejects
# honest kernels that sum in another order on wide-range inputs, where the problem-precision reference
# is itself off from the exact answer by more than atol + rtol*|r| on some elements. So an output that
# fails the fixed check is judged again against the exact answer (the reference evaluated in float64 on
# the same inputs): it passes when its error beyond atol + rtol*|exact| stays within ARBITRATION_FACTOR
# times the reference's own worst error, elementwise, and within that factor of the reference's own
# error in L2. Calibrated on the CPU (2026-12-06; fp32, normal and wide inputs): honest reorderings
# (blocked and split-K matmuls at K=512, block-carry scans, sequential sums, online softmax, two-pass
# layer norm) reach at most 0.3x the reference's error; TF32 and fp16-input matmuls ~700-930x, bf16
# 9,000x and more, one element 1% off 2,600x, zeros on a softmax 10^7x.
ARBITRATION_FACTOR = 8.0
ARBITRATED_GUARDS = ("tolerance", "relative_error")
# Only near misses are arbitrated (a float64 forward costs GPU time on every failing candidate, and most
# candidates in a search or an RL run fail): at most this share of elements over the fixed bound (the
# honest blocked matmul above missed it on 0.16%), or a relative L2 error at most this multiple of rtol.
ARBITRATE_AT_MOST = 0.01
ARBITRATE_L2_AT_MOST = 10.0


def _exact_stats(o: torch.Tensor, r: torch.Tensor, e: torch.Tensor, atol: float, rtol: float) -> dict[str, float]:
    """Two chunked passes: the reference's own error against the exact answer (max, L2), then the
    output's elementwise excess over atol + rtol*|e| + FACTOR*(the reference's max error), and L2s."""
    o, r, e = o.reshape(-1), r.reshape(-1), e.reshape(-1)
    dev = r.device
    ref_max = ref_sq = torch.zeros((), dtype=torch.float64, device=dev)
    for lo in range(0, r.numel(), COMPARE_CHUNK):
        rc, ec = _chunk(r, lo, dev), _chunk(e, lo, dev)
        d = torch.where(torch.isfinite(ec), (rc - ec).abs(), 0.0)
        ref_max, ref_sq = torch.maximum(ref_max, d.max()), ref_sq + (d * d).sum()
    ref_max_f = float(ref_max)
    over = torch.zeros((), dtype=torch.int64, device=dev)
    excess = err_sq = ex_sq = torch.zeros((), dtype=torch.float64, device=dev)
    for lo in range(0, r.numel(), COMPARE_CHUNK):
        oc, ec = _chunk(o, lo, dev), _chunk(e, lo, dev)
        finite = torch.isfinite(ec)
        d = torch.where(finite, (oc - ec).abs(), 0.0)
        bound = atol + rtol * ec.abs()
        over = over + (d > bound + ARBITRATION_FACTOR * ref_max_f).sum()
        excess = torch.maximum(excess, torch.where(finite, d - bound, 0.0).max())
        err_sq = err_sq + (d * d).sum()
        ex_sq = ex_sq + torch.where(finite, ec * ec, 0.0).sum()
    vals = torch.stack([over.double(), excess, err_sq, ex_sq, ref_sq]).tolist()
    return {"over": vals[0], "excess": vals[1], "err_l2": math.sqrt(vals[2]), "exact_l2": math.sqrt(vals[3]),
            "ref_l2": math.sqrt(vals[4]), "ref_max": ref_max_f}


def compare_exact(out: Any, ref: Any, exact: Any, atol: float, rtol: float) -> dict[str, Any]:
    """The arbitration of an output that failed ``compare`` on tolerance: raise Mismatch unless every
    floating output is within the bound above of ``exact`` (the reference's float64 evaluation);
    return what it measured. Outputs that are not floating tensors must still match exactly."""
    pairs = _pairs(out, ref)
    exacts = flatten_outputs(exact)
    if len(exacts) != len(pairs):
        raise Mismatch("tolerance", "the float64 reference has another output structure: no arbitration")
    worst = 0.0
    for (where, o, r), e in zip(pairs, exacts):
        if not isinstance(r, torch.Tensor) or not r.is_floating_point():
            compare(o, r, atol, rtol, r.device.type if isinstance(r, torch.Tensor) else "cpu")
            continue
        if not isinstance(e, torch.Tensor) or tuple(e.shape) != tuple(r.shape):
            raise Mismatch("tolerance", f"{where}: the float64 reference has another shape: no arbitration")
        s = _exact_stats(o, r, e, atol, rtol)
        ratio = s["excess"] / s["ref_max"] if s["ref_max"] > 0 else (math.inf if s["excess"] > 0 else 0.0)
        worst = max(worst, ratio)
        if s["over"]:
            raise Mismatch("tolerance", f"{where}: {int(s['over'])} elements off the exact (float64) answer by more "
                           f"than atol + rtol*|exact| + {ARBITRATION_FACTOR:g}x the reference's own worst error "
                           f"({s['ref_max']:.3g}); the worst is {ratio:.3g}x it")
        if s["err_l2"] > rtol * s["exact_l2"] + ARBITRATION_FACTOR * s["ref_l2"]:
            raise Mismatch("relative_error", f"{where}: L2 error against the exact answer {s['err_l2']:.3g} exceeds "
                           f"rtol*|exact| + {ARBITRATION_FACTOR:g}x the reference's own ({s['ref_l2']:.3g})")
    return {"worst_excess_over_reference_error": worst}


def exact_reference(model: Any, inputs: list[Any]) -> Any:
    """The reference evaluated in float64 on float64 copies of ``inputs`` (a copy of the model in
    float64): the exact answer the arbitration measures against. Raises whatever the model raises."""
    import copy

    m64 = copy.deepcopy(model)
    if isinstance(m64, torch.nn.Module):
        m64 = m64.double()
    args = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs]
    with torch.no_grad():
        return m64(*args)


# Digests of inputs, for the input-mutation check without a second copy of the inputs: a weighted sum
# of the tensor's bytes (read as int32 words where they divide, else bytes) with weights drawn from a
# key the judge keeps (the sandbox never sees it), chunk by chunk with a per-chunk multiplier, so a
# change collides only by chance (about 2^-31) and the temporaries stay near 100 MiB.
DIGEST_CHUNK = 1 << 22


_DIGEST_WEIGHTS: dict[tuple[int, int, str], torch.Tensor] = {}  # the last few (key, length, device)


def _digest_weights(key: int, n: int, device: torch.device) -> torch.Tensor:
    """``n`` weights drawn from ``key``: as many as the largest chunk needs, not DIGEST_CHUNK every time
    (drawing 4M of them took ~30 ms per call on the CPU, twice per correctness trial). The last few are
    kept, so a trial's second digest (same key) draws none."""
    k = (key, n, str(device))
    w = _DIGEST_WEIGHTS.get(k)
    if w is None:
        gen = torch.Generator(device="cpu").manual_seed(key)
        w = torch.randint(1, 2**31 - 1, (n,), generator=gen, dtype=torch.int64).to(device)
        while len(_DIGEST_WEIGHTS) >= 4:
            _DIGEST_WEIGHTS.pop(next(iter(_DIGEST_WEIGHTS)))
        _DIGEST_WEIGHTS[k] = w
    return w


def digest(inputs: list[Any], key: int) -> list[Any]:
    """One value per input: a keyed digest of each tensor's bytes (with its shape and dtype), the
    value itself for anything else. One host synchronisation per device, not one per tensor."""
    out: list[Any] = []
    words_of: list[tuple[int, torch.Tensor, str, tuple[int, ...]]] = []
    for x in inputs:
        if not isinstance(x, torch.Tensor):
            out.append(("value", repr(x)))
            continue
        t = x.detach()
        if not t.is_contiguous():
            t = t.contiguous()
        raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8, device=t.device)
        words = raw.view(torch.int32) if raw.numel() % 4 == 0 else raw
        words_of.append((len(out), words, str(t.dtype), tuple(t.shape)))
        out.append(None)
    n = min(DIGEST_CHUNK, max([w.numel() for _, w, _, _ in words_of] + [1]))
    totals: dict[torch.device, list[tuple[int, str, tuple[int, ...], torch.Tensor]]] = {}
    for i, words, dtype, shape in words_of:
        w = _digest_weights(key, n, words.device)
        total = torch.zeros((), dtype=torch.int64, device=words.device)
        for k, lo in enumerate(range(0, words.numel(), DIGEST_CHUNK)):
            c = words[lo:lo + DIGEST_CHUNK].to(torch.int64)
            total = total + (c * w[:c.numel()]).sum() * (2 * k + 1)
        totals.setdefault(words.device, []).append((i, dtype, shape, total))
    for items in totals.values():
        for (i, dtype, shape, _), value in zip(items, torch.stack([it[3] for it in items]).tolist()):
            out[i] = (dtype, shape, int(value))
    return out


# aten ops that move, view or allocate memory: never "the computation" of a problem.
STRUCTURAL_OPS = frozenset({
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "fill_", "zero_", "view", "_unsafe_view",
    "reshape", "contiguous", "clone", "copy_", "_to_copy", "to", "t", "transpose", "permute", "expand", "expand_as",
    "as_strided", "detach", "alias", "slice", "select", "unsqueeze", "squeeze", "split", "chunk", "unbind",
    "narrow", "flatten", "unflatten", "view_as", "lift_fresh", "resize_", "set_", "stride", "size", "numel",
    "is_contiguous", "dim", "sym_size", "sym_stride", "sym_numel", "arange", "item", "_local_scalar_dense",
    "record_stream", "randn", "rand", "normal_", "uniform_", "cat", "stack", "_reshape_alias", "split_with_sizes",
})


def op_name(func: Any) -> str:
    name = getattr(getattr(func, "overloadpacket", None), "__name__", None) or str(func)
    return name.split(".")[0].replace("aten::", "")


def compute_ops(model: Any, inputs: list[Any]) -> set[str]:
    """The aten ops one forward runs, less the structural ones."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[str] = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            seen.add(op_name(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Record():
        model(*inputs)
    return seen - STRUCTURAL_OPS
