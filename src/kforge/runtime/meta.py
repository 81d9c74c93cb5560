"""Problem metadata that both the orchestrator and the judge read (standard library only)."""

from __future__ import annotations

import ast
import math
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


# Datasheet ceilings per device name fragment: memory bytes/s, and the fastest FLOP/s any legitimate
# kernel could use (TF32 tensor cores for fp32 problems, dense bf16/fp16 tensor cores otherwise), so
# the floor never rejects a real kernel. Measured ceilings are lower, so the floor is conservative.
_PEAKS = {"H200": (4.8e12, 494e12, 989e12), "H100": (3.35e12, 494e12, 989e12), "A100": (2.04e12, 156e12, 312e12)}
ROOFLINE_MARGIN = 0.9  # a time under 90% of the floor is rejected


def roofline_floor_ms(info: dict[str, Any], flops: float | None, nbytes: float | None,
                       dtype: str = "float32") -> float | None:
    if info.get("device_kind") != "cuda":
        return None
    name = str(info.get("device", ""))
    for key, (bw, tf32, half) in _PEAKS.items():
        if key in name:
            peak = tf32 if dtype in ("float32", "float64") else half
            times = [x for x in ((nbytes or 0) / bw, (flops or 0) / peak) if x > 0]
            return max(times) * 1e3 if times else None
    return None
