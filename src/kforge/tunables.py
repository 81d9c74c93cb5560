"""Tunable constants of a kernel's source, found with the AST (never by running the code).

The ``tune`` generator changes them and the evolution search's features read them (block sizes,
warps, stages): both import them from here, so neither depends on the other.

- keyword arguments of a Triton launch (``kernel[grid](..., BLOCK_M=64, num_warps=4)``) and of
  ``triton.Config`` whose name looks tunable (``BLOCK*``, ``*_SIZE``, ``TILE*``, ``GROUP*``,
  ``num_warps``, ``num_stages``, ...): an int literal there, or the int literals that the local or
  module-level assignment of the name passed holds (``BLOCK_M, BLOCK_N = 64, 64``; the branches of
  ``8 if ... else 4``; the cap in ``min(4096, next_power_of_2(n))``);
- module-level int constants with upper-case names (``BLOCK = 256``, ``TILE: tl.constexpr = 32``);
- in CUDA source strings, ``#define``/``constexpr``/``const int`` constants with tunable names and the
  block size of a ``<<<grid, block>>>`` launch.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

TUNABLE = re.compile(r"^(num_warps|num_stages|num_ctas|\w*BLOCK\w*|\w*_SIZE\w*|TILE\w*|\w*_TILE\w*|GROUP\w*|"
                     r"\w*WARPS\w*|\w*STAGES\w*|VEC\w*|\w*UNROLL\w*|SPLIT\w*|\w*_PER_\w*|\w*THREADS\w*)$",
                     re.I)
_CUDA_DEFINE = re.compile(r"#[ \t]*define[ \t]+(?P<name>\w+)[ \t]+\(?(?P<value>\d+)\)?[ \t]*(?=\\?\n|$|//)", re.M)
_CUDA_CONST = re.compile(r"\b(?:static[ \t]+)?(?:constexpr|const)[ \t]+(?:unsigned[ \t]+)?(?:int|size_t|int64_t|"
                         r"uint32_t|int32_t|long)[ \t]+(?P<name>\w+)[ \t]*=[ \t]*(?P<value>\d+)[ \t]*;")
_CUDA_LAUNCH = re.compile(r"<<<[^,<>]+,[ \t]*(?P<value>\d+)[ \t]*(?:,|>>>)")
_MNK = re.compile(r"BLOCK_?(SIZE_)?[MNK]$", re.I)


@dataclass(frozen=True)
class Site:
    """One int literal in the source that can be changed."""

    name: str  # what the recipe's ranges match: BLOCK_M, num_warps, threads
    detail: str  # where, for a label: "line 49", "line 56, else branch"
    kind: str  # warps | stages | block | const | cuda
    value: int
    start: int  # byte offsets of the literal in the UTF-8 source
    end: int

    @property
    def key(self) -> str:
        return f"{self.name}@{self.start}"


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    for i, b in enumerate(data):
        if b == 10:
            starts.append(i + 1)
    return starts


class _Finder:
    def __init__(self, code: str, module_constants: bool = True) -> None:
        self.code = code
        self.data = code.encode()
        self.starts = _line_starts(self.data)
        self.tree = ast.parse(code)
        self.module_constants = module_constants
        self.sites: dict[int, Site] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def add(self, node: ast.AST, name: str, kind: str, detail: str = "") -> None:
        if not (isinstance(node, ast.Constant) and type(node.value) is int and node.value > 0):
            return
        start = self.offset(node.lineno, node.col_offset)
        end = self.offset(node.end_lineno or node.lineno, node.end_col_offset or 0)
        if not self.data[start:end].decode().isdigit():
            return  # 0x40, 1_024, 64 written oddly: leave it alone
        where = f"line {node.lineno}" + (f", {detail}" if detail else "")
        self.sites.setdefault(start, Site(name, where, kind, node.value, start, end))

    def values(self, expr: ast.AST, name: str, kind: str, detail: str = "") -> None:
        """Int literals in the value positions of an expression."""
        if isinstance(expr, ast.Constant):
            self.add(expr, name, kind, detail)
        elif isinstance(expr, ast.IfExp):
            self.values(expr.body, name, kind, (detail + ", " if detail else "") + "if branch")
            self.values(expr.orelse, name, kind, (detail + ", " if detail else "") + "else branch")
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in ("min", "max"):
            for arg in expr.args:
                self.values(arg, name, kind, (detail + ", " if detail else "") + f"{expr.func.id} bound")

    def scope_of(self, node: ast.AST) -> ast.AST:
        cur: ast.AST | None = node
        while cur is not None and not isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            cur = self.parents.get(cur)
        return cur or self.tree

    def bindings(self, scope: ast.AST, name: str) -> list[ast.AST]:
        """Value expressions assigned to ``name`` directly in ``scope`` (not in nested functions)."""
        found: list[ast.AST] = []
        stack = list(ast.iter_child_nodes(scope))
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    found.extend(_bound(target, node.value, name))
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                found.extend(_bound(node.target, node.value, name))
            stack.extend(ast.iter_child_nodes(node))
        return found

    def resolve(self, at: ast.AST, variable: str, name: str, kind: str) -> None:
        """The literals bound to ``variable`` where ``at`` runs (its function, else the module)."""
        scope = self.scope_of(at)
        exprs = self.bindings(scope, variable)
        if not exprs and scope is not self.tree:
            exprs = self.bindings(self.tree, variable)
        for expr in exprs:
            self.values(expr, name, kind)

    def find(self) -> list[Site]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and _is_launch_or_config(node):
                for kw in node.keywords:
                    if kw.arg is None or not TUNABLE.match(kw.arg):
                        continue
                    kind = _kind(kw.arg)
                    if isinstance(kw.value, ast.Name):
                        self.resolve(node, kw.value.id, kw.arg, kind)
                    else:
                        self.values(kw.value, kw.arg, kind)
                if _is_config(node) and node.args and isinstance(node.args[0], ast.Dict):
                    for k, v in zip(node.args[0].keys, node.args[0].values):
                        if isinstance(k, ast.Constant) and isinstance(k.value, str) and TUNABLE.match(k.value):
                            self.values(v, k.value, _kind(k.value))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self.cuda(node)
        if self.module_constants:
            for stmt in self.tree.body:
                targets: list[ast.expr] = []
                value: ast.expr | None = None
                if isinstance(stmt, ast.Assign):
                    targets, value = stmt.targets, stmt.value
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    targets, value = [stmt.target], stmt.value
                for target in targets:
                    if value is not None and isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
                        self.values(value, target.id, _kind(target.id) if TUNABLE.match(target.id) else "const")
        return sorted(self.sites.values(), key=lambda s: s.start)

    def cuda(self, node: ast.Constant) -> None:
        text = str(node.value)
        if "__global__" not in text and "<<<" not in text:
            return
        start = self.offset(node.lineno, node.col_offset)
        end = self.offset(node.end_lineno or node.lineno, node.end_col_offset or 0)
        segment = self.data[start:end].decode()
        base = start
        for regex, kind in ((_CUDA_DEFINE, "cuda"), (_CUDA_CONST, "cuda"), (_CUDA_LAUNCH, "threads")):
            for m in regex.finditer(segment):
                name = m.groupdict().get("name") or "threads"
                if kind == "cuda" and not TUNABLE.match(name):
                    continue
                value = int(m.group("value"))
                if value <= 0:
                    continue
                s = base + len(segment[: m.start("value")].encode())
                e = s + len(m.group("value"))
                line = self.data[:s].count(b"\n") + 1
                k = "threads" if kind == "threads" or "THREAD" in name.upper() else "cuda"
                self.sites.setdefault(s, Site(name, f"line {line}, CUDA source", k, value, s, e))


def _bound(target: ast.AST, value: ast.AST, name: str) -> list[ast.AST]:
    if isinstance(target, ast.Name):
        return [value] if target.id == name else []
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
            and len(target.elts) == len(value.elts):
        out: list[ast.AST] = []
        for t, v in zip(target.elts, value.elts):
            out.extend(_bound(t, v, name))
        return out
    return []


def _is_config(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "Config") or (isinstance(f, ast.Name) and f.id == "Config")


def _is_launch_or_config(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Subscript) or _is_config(node)


def _kind(name: str) -> str:
    low = name.lower()
    if "warps" in low:
        return "warps"
    if "stages" in low:
        return "stages"
    if "thread" in low:
        return "threads"
    return "block"


def find_sites(code: str, module_constants: bool = True) -> list[Site]:
    """Every tunable int literal in a candidate's source (empty if it does not parse)."""
    try:
        return _Finder(code.replace("\r\n", "\n"), module_constants).find()
    except SyntaxError:
        return []


def infer_range(site: Site) -> list[int]:
    """Values to try for a site, the current one excluded."""
    v = site.value
    if site.kind == "stages":
        values = list(range(max(1, v - 2), v + 3))
    elif site.kind == "warps":
        values = [w for w in (1, 2, 4, 8, 16, 32) if v / 4 <= w <= v * 4]
    else:
        lo = 16 if _MNK.search(site.name) else 1
        hi = 1024 if site.kind == "threads" else 1 << 16
        if v & (v - 1) == 0:
            values = [v >> 2, v >> 1, v << 1, v << 2]
        else:  # not a power of two: halves, doubles and the powers of two around it
            p = 1 << (v.bit_length() - 1)
            values = [v // 2, p, p * 2, v * 2]
        values = [x for x in values if lo <= x <= hi]
    return sorted({x for x in values if x > 0 and x != v})


def apply_changes(code: str, changes: dict[Site, int]) -> str:
    data = code.replace("\r\n", "\n").encode()
    for site in sorted(changes, key=lambda s: s.start, reverse=True):
        data = data[: site.start] + str(changes[site]).encode() + data[site.end:]
    return data.decode()


def _qualifier(site: Site) -> str:
    """'[if]', '[else]', '[min]' for a literal inside a conditional or a bound; '' otherwise."""
    parts = [p.split()[0] for p in site.detail.split(", ")[1:] if p.endswith(("branch", "bound"))]
    return "".join(f"[{p}]" for p in parts)


def describe(changes: dict[Site, int]) -> str:
    return ", ".join(f"{s.name}{_qualifier(s)} {s.value}->{v}"
                     for s, v in sorted(changes.items(), key=lambda kv: kv[0].start))
