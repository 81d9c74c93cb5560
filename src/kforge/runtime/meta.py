"""Problem metadata that both the orchestrator and the judge read (standard library only)."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any


def problem_metadata(source: str) -> dict[str, Any]:
    """The optional ``KFORGE = {...}`` literal of a problem file, or {}."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KFORGE" for t in node.targets):
            value = ast.literal_eval(node.value)
            return value if isinstance(value, dict) else {}
    return {}


def eval_expr(expr: Any, names: dict[str, Any]) -> float | None:
    """Evaluate a FLOP/byte count: a number, or an arithmetic expression over shape names."""
    if expr is None:
        return None
    if isinstance(expr, (int, float)):
        return float(expr)
    tree = ast.parse(str(expr), mode="eval")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and isinstance(names.get(node.id), (int, float)):
            return float(names[node.id])
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if type(node.op) in ops:
                return ops[type(node.op)]
            if isinstance(node.op, ast.Div):
                return a / b
            if isinstance(node.op, ast.Pow):
                return a ** b
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"unsupported expression {ast.dump(node)[:80]}")

    value = ev(tree)
    return value if math.isfinite(value) else None


def strip_metadata(source: str) -> str:
    """The problem's source as a generator may see it: without the ``KFORGE`` literal, whose
    held-out shapes must never be shown to a model (the module-level constants stay)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines(keepends=True)
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KFORGE" for t in node.targets):
            drop.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
            k = node.lineno - 2  # comments directly above describe the metadata: drop them too
            while k >= 0 and lines[k].lstrip().startswith("#"):
                drop.add(k)
                k -= 1
    kept = [ln for i, ln in enumerate(lines) if i not in drop]
    text = "".join(kept)
    while "\n\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text


@dataclass(frozen=True)
class DeviceFigures:
    """One GPU's datasheet figures (dense, no sparsity), as NVIDIA publishes them."""

    label: str  # the product, as a person names it: "H100 SXM"
    names: tuple[str, ...]  # the names torch and nvidia-smi report for it, matched exactly
    memory_bandwidth_gbs: float
    fp32_tflops: float
    tf32_tflops: float  # tensor cores, dense
    bf16_tflops: float  # BF16/FP16 tensor cores, dense
    l2_mb: float
    memory_gb: float
    sm_count: int
    fp8_tflops: float | None = None


# The one table of device figures: the roofline floor below and the prompts' device line read it.
# A device is found by its exact reported name (case and spacing aside, with or without "NVIDIA "),
# never by a fragment: an H100 NVL (3.9 TB/s) must not get an H100 SXM's 3.35 TB/s.
DEVICES: tuple[DeviceFigures, ...] = (
    DeviceFigures("H200 SXM", ("NVIDIA H200",), 4800, 67, 495, 989, 50, 141, 132, 1979),
    DeviceFigures("H200 NVL", ("NVIDIA H200 NVL",), 4800, 60, 417, 835, 50, 141, 132, 1670),
    DeviceFigures("H100 SXM", ("NVIDIA H100 80GB HBM3",), 3350, 67, 495, 989, 50, 80, 132, 1979),
    DeviceFigures("H100 NVL", ("NVIDIA H100 NVL",), 3900, 60, 417, 835, 50, 94, 132, 1670),
    DeviceFigures("H100 PCIe", ("NVIDIA H100 PCIe",), 2000, 51, 378, 756, 50, 80, 114, 1513),
    DeviceFigures("A100 80GB SXM", ("NVIDIA A100-SXM4-80GB",), 2039, 19.5, 156, 312, 40, 80, 108),
    DeviceFigures("A100 40GB SXM", ("NVIDIA A100-SXM4-40GB",), 1555, 19.5, 156, 312, 40, 40, 108),
    DeviceFigures("A100 80GB PCIe", ("NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"), 1935, 19.5, 156, 312, 40,
                  80, 108),
    DeviceFigures("A100 40GB PCIe", ("NVIDIA A100-PCIE-40GB",), 1555, 19.5, 156, 312, 40, 40, 108),
    DeviceFigures("L40S", ("NVIDIA L40S",), 864, 91.6, 183, 362, 96, 48, 142, 733),
)


def _key(name: str) -> str:
    key = " ".join(name.lower().replace("_", " ").split())
    return key[len("nvidia "):] if key.startswith("nvidia ") else key


_BY_NAME = {_key(n): d for d in DEVICES for n in d.names}


def device_figures(name: str | None) -> DeviceFigures | None:
    """The datasheet figures of a device by its reported name ('NVIDIA H100 80GB HBM3'); None for a
    device not in :data:`DEVICES` (then there is no roofline floor and the prompts state no figures)."""
    return _BY_NAME.get(_key(name)) if name else None


ROOFLINE_MARGIN = 0.9  # a time under 90% of the floor is rejected


def roofline_floor_ms(info: dict[str, Any], flops: float | None, nbytes: float | None,
                      dtype: str = "float32") -> float | None:
    """The fastest time the device's datasheet allows: bytes over memory bandwidth, FLOPs over the
    fastest peak any legitimate kernel could use (TF32 tensor cores for fp32 problems, BF16/FP16
    otherwise), so the floor never rejects a real kernel. None on a CPU or an unknown device (no
    floor: the roofline guard does not apply there)."""
    if info.get("device_kind") != "cuda":
        return None
    dev = device_figures(str(info.get("device") or ""))
    if dev is None:
        return None
    peak = (dev.tf32_tflops if dtype in ("float32", "float64") else dev.bf16_tflops) * 1e12
    times = [x for x in ((nbytes or 0) / (dev.memory_bandwidth_gbs * 1e9), (flops or 0) / peak) if x > 0]
    return max(times) * 1e3 if times else None
