"""Problems in KernelBench's format, read without importing torch.

A problem file defines ``Model``, ``get_inputs()`` and ``get_init_inputs()``. kforge's own problems
add an optional ``KFORGE = {...}`` literal (name, level, dtype, shapes, flops, bytes, tolerances);
a file without it still works, with its module-level constants as its only ("main") shape.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kforge.options import RecipeError, read_text
from kforge.runtime.meta import eval_expr, problem_metadata

BUILTIN_DIR = Path(__file__).parent / "builtin"
SOLUTIONS_DIR = BUILTIN_DIR / "solutions"


@dataclass
class Problem:
    id: str
    name: str
    level: int | None
    path: str
    source: str
    dtype: str = "float32"
    shapes: dict[str, Any] = field(default_factory=dict)
    flops: Any = None
    bytes: Any = None
    atol: float | None = None
    rtol: float | None = None
    inplace: bool = False
    constants: dict[str, Any] = field(default_factory=dict)
    # Why the problem cannot be judged offline (it downloads a model or data set), or None
    needs_download: str | None = None

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def shape(self, name: str) -> dict[str, Any]:
        """The globals to set for a named shape ('main', 'small', or 'heldout:N')."""
        if name.startswith("heldout"):
            held = self.shapes.get("heldout") or []
            idx = int(name.split(":", 1)[1]) if ":" in name else 0
            if idx >= len(held):
                raise RecipeError(f"problem {self.id} has no held-out shape {idx}")
            return dict(held[idx])
        if name == "small" and "small" not in self.shapes:
            return dict(self.shapes.get("main", {}))  # a KernelBench file has only its own shape
        return dict(self.shapes.get(name, {}))

    def has_shape(self, name: str) -> bool:
        return name in self.shapes

    def shape_values(self, name: str) -> dict[str, Any]:
        return {**self.constants, **self.shape(name)}

    def flops_at(self, name: str) -> float | None:
        return eval_expr(self.flops, self.shape_values(name))

    def bytes_at(self, name: str) -> float | None:
        return eval_expr(self.bytes, self.shape_values(name))

    def solutions(self) -> dict[str, Path]:
        """Hand-written example solutions shipped with a built-in problem, by backend."""
        found = {}
        if SOLUTIONS_DIR.is_dir():
            for backend_dir in sorted(SOLUTIONS_DIR.iterdir()):
                for suffix in (".py",):
                    f = backend_dir / f"{self.id}{suffix}"
                    if f.is_file():
                        found[backend_dir.name] = f
        return found

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "level": self.level, "dtype": self.dtype, "path": self.path,
                "shapes": self.shapes, "flops": self.flops, "bytes": self.bytes, "hash": self.hash,
                "needs_download": self.needs_download}


def _constants(tree: ast.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(value, (int, float, bool, str, tuple, list)):
                out[node.targets[0].id] = value
    return out


# Calls that fetch weights or data from the network (Hugging Face, torch.hub): KernelBench's level 4
# builds its models with transformers' from_pretrained, some of it at import time.
_DOWNLOAD_CALLS = {"from_pretrained", "hf_hub_download", "snapshot_download", "load_dataset",
                   "load_state_dict_from_url", "download_url_to_file"}
ALLOW_DOWNLOADS_ENV = "KFORGE_ALLOW_DOWNLOADS"


def download_reason(tree: ast.Module) -> str | None:
    """Why a problem needs the network to build its model (the first such call), or None."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        hub = (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Attribute)
               and func.value.attr == "hub")
        if name in _DOWNLOAD_CALLS or hub:
            return f"it downloads a model: {ast.unparse(func)}(...) at line {node.lineno}"
    return None


def check_downloads(problems: list[Problem]) -> None:
    """A clear error before any judging when a selected problem needs a model download (unless
    $KFORGE_ALLOW_DOWNLOADS is set): the judge would otherwise fail on each of them in turn."""
    import os

    bad = [p for p in problems if p.needs_download]
    if bad and not os.environ.get(ALLOW_DOWNLOADS_ENV):
        names = ", ".join(p.id for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise RecipeError(f"{len(bad)} selected problem(s) need a model download, which the judge cannot do "
                          f"offline: {names} ({bad[0].needs_download}). Leave them out "
                          "([problems] level or ids; KernelBench's level 4 is all of this kind), or set "
                          f"{ALLOW_DOWNLOADS_ENV}=1 where the models are cached.")


def is_problem_source(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    return {"Model", "get_inputs", "get_init_inputs"} <= names


def load_problem_file(path: Path, problem_id: str | None = None) -> Problem:
    return load_problem_source(read_text(path, "problem file"), problem_id, path=path)


def load_problem_source(source: str, problem_id: str | None = None, path: Path | None = None) -> Problem:
    """A problem from its source text; ``path`` (if any) names it in errors and gives its default id."""
    where = str(path) if path is not None else "the problem source"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        named = f"problem file {path}" if path is not None else where
        raise RecipeError(f"{named} is not valid Python (line {exc.lineno}): {exc.msg}") from exc
    if not is_problem_source(source):
        raise RecipeError(f"{where} is not a KernelBench-format problem: it must define Model, get_inputs() "
                          "and get_init_inputs()")
    try:
        meta = problem_metadata(source)
    except (ValueError, SyntaxError) as exc:
        raise RecipeError(f"{where}: KFORGE must be a literal dict: {exc}") from exc
    constants = _constants(tree)
    stem = path.stem if path is not None else "inline-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    level = meta.get("level")
    if level is None and path is not None:
        m = re.search(r"level[_ ]?(\d+)", str(path.parent.name), re.I)
        level = int(m.group(1)) if m else None
    shapes = dict(meta.get("shapes") or {})
    shapes.setdefault("main", {})
    return Problem(
        id=problem_id or meta.get("id") or stem, name=meta.get("name") or stem, level=level,
        path=str(path) if path is not None else "", source=source, dtype=meta.get("dtype", "float32"),
        shapes=shapes, flops=meta.get("flops"), bytes=meta.get("bytes"), atol=meta.get("atol"),
        rtol=meta.get("rtol"), inplace=bool(meta.get("inplace")), constants=constants,
        needs_download=download_reason(tree))


def load_problem_path(path: Path) -> list[Problem]:
    """A KernelBench-format file, or every problem file under a directory (ids from relative paths)."""
    if not path.exists():
        raise RecipeError(f"problem path {path} does not exist")
    if path.is_file():
        return [load_problem_file(path)]
    problems = []
    for f in sorted(path.rglob("*.py")):
        if f.name.startswith("_") or "solutions" in f.relative_to(path).parts:
            continue
        try:
            text = f.read_bytes().decode("utf-8")
        except OSError:
            continue
        except UnicodeDecodeError:
            text = read_text(f, "problem file")  # raises, naming the file and the byte
        if not is_problem_source(text):
            continue
        rel = f.relative_to(path).with_suffix("")
        pid = str(rel).replace("\\", "/")
        problems.append(load_problem_file(f, problem_id=pid if len(rel.parts) > 1 else None))
    if not problems:
        raise RecipeError(f"no KernelBench-format problems (files defining Model, get_inputs and "
                          f"get_init_inputs) under {path}")
    return problems


def builtin_problems() -> list[Problem]:
    files = sorted(f for f in BUILTIN_DIR.glob("*.py") if not f.name.startswith("_"))
    problems = [load_problem_file(f) for f in files]
    return sorted(problems, key=lambda p: (p.level or 0, p.id))


def select(problems: list[Problem], ids: list[str] | None, level: int | None) -> list[Problem]:
    if level is not None:
        problems = [p for p in problems if p.level == level]
    if ids:
        by_id = {p.id: p for p in problems}
        missing = [i for i in ids if i not in by_id]
        if missing:
            from kforge.options import close_match

            hint = close_match(missing[0], by_id)
            raise RecipeError(f"problems.ids: unknown problem id(s) {', '.join(map(repr, missing))}.{hint} "
                              f"Known: {', '.join(sorted(by_id))}.")
        problems = [by_id[i] for i in ids]
    return problems
