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
    def __init__(self, guard: str, message: str, max_abs: float | None = None, max_rel: float | None = None):
        super().__init__(message)
        self.guard, self.max_abs, self.max_rel = guard, max_abs, max_rel


# Elements compared per pass: the float64 temporaries of one pass stay near 1 GiB whatever the output's
# size (a 400M-element output compared whole took ~20 GiB of them).
COMPARE_CHUNK = 1 << 24


def _float_stats(o: torch.Tensor, r: torch.Tensor, atol: float, rtol: float) -> dict[str, Any]:
    """Float64 comparison of ``o`` with ``r`` (same shape, device), chunk by chunk: NaN/Inf where the
    reference is finite, max abs and relative error, elements over atol + rtol*|r|, and the squared L2
    norms of the error and of the reference over its finite elements."""
    o, r = o.reshape(-1), r.reshape(-1)
    n = r.numel()
    zero = torch.zeros((), dtype=torch.float64, device=r.device)
    nonfinite = over = torch.zeros((), dtype=torch.int64, device=r.device)
    max_abs = max_rel = err_sq = ref_sq = zero
    floor = max(atol, 1e-12)
    for lo in range(0, n, COMPARE_CHUNK):
        oc, rc = o[lo:lo + COMPARE_CHUNK].double(), r[lo:lo + COMPARE_CHUNK].double()
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


def compare(out: Any, ref: Any, atol: float, rtol: float, expect_device: str) -> tuple[float, float]:
    """Raise Mismatch unless ``out`` matches ``ref``; return (max abs error, max relative error).

    Besides elementwise allclose, the relative L2 error must be under ``rtol``: a candidate that
    returns zeros fails even where every reference value is below ``atol``.
    """
    outs, refs = flatten_outputs(out), flatten_outputs(ref)
    if len(outs) != len(refs):
        raise Mismatch("output_structure", f"returned {len(outs)} outputs, expected {len(refs)}")
    worst_abs = worst_rel = 0.0
    for i, (o, r) in enumerate(zip(outs, refs)):
        where = f"output {i}" if len(refs) > 1 else "output"
        if isinstance(o, Foreign):
            raise Mismatch("output_type", f"{where} is {o!r}, not a plain torch.Tensor")
        if not isinstance(r, torch.Tensor):
            if o != r:
                raise Mismatch("tolerance", f"{where} is {o!r}, expected {r!r}")
            continue
        if not isinstance(o, torch.Tensor):
            raise Mismatch("output_type", f"{where} is {type(o).__name__}, not a torch.Tensor")
        if tuple(o.shape) != tuple(r.shape):
            raise Mismatch("output_shape", f"{where} has shape {tuple(o.shape)}, expected {tuple(r.shape)}")
        if o.dtype != r.dtype:
            raise Mismatch("output_dtype", f"{where} has dtype {o.dtype}, expected {r.dtype}")
        o = o.to(r.device)
        if not r.is_floating_point():
            if not torch.equal(o, r):
                raise Mismatch("tolerance", f"{where} differs from the reference in {int((o != r).sum())} elements")
            continue
        s = _float_stats(o, r, atol, rtol)
        if s["nonfinite"]:
            raise Mismatch("nonfinite", f"{where} has {s['nonfinite']} NaN/Inf values where the reference is finite")
        max_abs, max_rel = s["max_abs"], s["max_rel"]
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        if s["over"]:
            raise Mismatch("tolerance", f"{where}: {s['over']} of {r.numel()} elements off by more than atol={atol:g}, "
                           f"rtol={rtol:g} (max abs error {max_abs:.3g})", max_abs, max_rel)
        ref_norm, err_norm = math.sqrt(s["ref_sq"]), math.sqrt(s["err_sq"])
        if ref_norm > 0 and err_norm / ref_norm > rtol and err_norm > 0:
            raise Mismatch("relative_error", f"{where}: relative L2 error {err_norm / ref_norm:.3g} exceeds {rtol:g}",
                           max_abs, max_rel)
    return worst_abs, worst_rel


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
