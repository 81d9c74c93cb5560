"""Recipes: TOML files that say what to run. Validated against every plugin's declared options.

Precedence: ``--set`` on the command line > ``KFORGE__TABLE__KEY`` environment variables > the
recipe > defaults.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kforge.options import Mistakes, Option, OptionSet, RecipeError, close_match, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLUGIN_TABLES = {"backend": "backends", "generator": "generators", "search": "searches", "executor": "executors"}
DEFAULT_PLUGIN = {"backend": "triton", "generator": "replay", "search": "best-of-n", "executor": "local"}

CORE_OPTIONS: dict[str, OptionSet] = {
    "run": OptionSet("[run]", (
        Option("name", str, None, "run name (default: the recipe file's name)"),
        Option("seed", int, 0, "the run seed: every random choice derives from it"),
        Option("out", str, "runs", "folder that holds run directories"),
    )),
    "problems": OptionSet("[problems]", (
        Option("source", str, "builtin", "'builtin', or the path of a KernelBench-format file or directory"),
        Option("ids", list, None, "problem ids to select (default: all)", item_type=str),
        Option("level", int, None, "select problems of this level"),
        Option("shapes", str, "auto", "'small' (CPU-sized), 'main' (GPU-sized) or 'auto' (small without a GPU)",
               choices=("auto", "small", "main")),
    )),
    "eval": OptionSet("[eval]", (
        Option("trials", int, 5, "correctness trials, each with fresh inputs (at least 5)", minimum=5),
        Option("atol", float, None, "absolute tolerance (default from the dtype: fp32 1e-4, fp16/bf16 1e-2)",
               minimum=0),
        Option("rtol", float, None, "relative tolerance (default from the dtype)", minimum=0),
        Option("warmup", int, 3, "untimed warm-up calls", minimum=0),
        Option("min_samples", int, 10, "fewest timed samples (0 skips timing)", minimum=0),
        Option("max_samples", int, 100, "most timed samples", minimum=1),
        Option("max_timing_s", float, 10.0, "time cap for timing one candidate", minimum=0),
        Option("target_rel_se", float, 0.005, "stop timing when the standard error is under this fraction of the median"),
        Option("flush_l2", bool, True, "flush the L2 cache before each timed call (false: warm-cache timing)"),
        Option("baseline_compile", list, [], "torch.compile modes timed as extra baselines, e.g. "
               '["default", "max-autotune-no-cudagraphs"]; speedup_vs_compile uses the first', item_type=str),
        Option("heldout", bool, True, "also judge correctness on the problem's held-out shapes (main shapes only)"),
        Option("heldout_trials", int, 2, "correctness trials per held-out shape", minimum=1),
        Option("profile_check", bool, True, "on a GPU, the profiler must see the candidate launch a kernel it defines"),
        Option("ops_check", bool, True, "reject a forward that runs every compute op of the reference (library fallback)"),
        Option("aa_tolerance", float, 0.01, "flag a result as noisy when the baseline's A/A ratio is off by more"),
        Option("cuda_graph_below_ms", float, 0.1,
               "on a GPU, time both sides by CUDA-graph replay when the faster one's warm-up time is under this "
               "(ms): a plain call's launch and synchronisation would dominate; 0 never", minimum=0),
        Option("baseline_math", str, "pytorch",
               "math modes of the timed baselines: 'pytorch' (PyTorch's defaults, as users and KernelBench run "
               "it: cuDNN may use TF32) or 'exact' (no TF32, no reduced-precision reductions); correctness is "
               "always judged against the exact reference", choices=("pytorch", "exact")),
        Option("compile_timeout_s", float, 300.0, "timeout for loading/compiling one candidate", minimum=1),
        Option("run_timeout_s", float, 60.0, "timeout for one call of a candidate", minimum=1),
    )),
    "budget": OptionSet("[budget]", (
        Option("candidates", int, None, "most candidates to evaluate in the run", minimum=1),
        Option("wall_clock_s", float, None, "stop the run after this many seconds", minimum=0),
        Option("tokens", int, None, "stop the run once generations have used this many tokens (in + out)", minimum=1),
        Option("usd", float, None, "stop the run once generations have cost this many US dollars", minimum=0),
    )),
}
ALL_TABLES = ("run", "problems", "backend", "generator", "search", "executor", "eval", "budget")


@dataclass
class Recipe:
    path: Path | None
    raw: dict[str, Any]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def plugin(self, table: str) -> tuple[str, dict[str, Any]]:
        t = dict(self.tables[table])
        return t.pop("name"), t

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.tables)

    @property
    def name(self) -> str:
        return str(self.tables["run"]["name"])


def parse_value(text: str) -> Any:
    """A ``--set`` value: parsed as a TOML value, else taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str, source: str = "--set") -> None:
    if "=" not in assignment:
        raise RecipeError(f"{source} {assignment!r}: expected key.path=value, e.g. eval.trials=7")
    key, value = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise RecipeError(f"{source} {assignment!r}: the key must name a table and a key, e.g. eval.trials")
    if parts[0] not in ALL_TABLES:
        raise RecipeError(f"{source} {assignment!r}: unknown table [{parts[0]}].{close_match(parts[0], ALL_TABLES)}")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{source} {assignment!r}: {p} is not a table")
    node[parts[-1]] = parse_value(value.strip())


def load_recipe(path: str | Path | None, overrides: list[str] | None = None, registry: Any = None,
                env: dict[str, str] | None = None) -> Recipe:
    """Read, override and validate a recipe. Raises RecipeError with a message that names the file."""
    raw: dict[str, Any] = {}
    rpath = Path(path) if path is not None else None
    where = str(rpath) if rpath else "recipe"
    if rpath is not None:
        if not rpath.is_file():
            raise RecipeError(f"recipe file {rpath} does not exist")
        try:
            raw = tomllib.loads(read_text(rpath, "recipe file"))
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"{rpath} is not valid TOML: {exc}") from exc
    env = dict(os.environ) if env is None else env
    for key in sorted(env):
        if key.startswith("KFORGE__") and key.count("__") >= 2:
            dotted = ".".join(p.lower() for p in key[len("KFORGE__"):].split("__"))
            apply_override(raw, f"{dotted}={env[key]}", source=f"environment variable {key}")
    for assignment in overrides or []:
        apply_override(raw, assignment)
    try:
        return validate(raw, rpath, registry)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}", mistakes=[f"{where}: {p}" for p in exc.mistakes]) from None


def _table_of(key: str, registry: Any) -> str | None:
    """The table that declares ``key`` (for a key written at a recipe's top level), or None."""
    for table, optset in CORE_OPTIONS.items():
        if any(o.name == key for o in optset.options):
            return table
    for table, kind in PLUGIN_TABLES.items():
        if key == "name" or any(o.name == key for o in getattr(registry.get(kind, DEFAULT_PLUGIN[table]),
                                                               "options", ())):
            return table
    return None


def validate(raw: dict[str, Any], path: Path | None, registry: Any = None) -> Recipe:
    from kforge.plugins import get_registry

    registry = registry or get_registry()
    base = path.parent if path is not None else Path.cwd()
    mistakes = Mistakes()
    for table, value in list(raw.items()):
        if not isinstance(value, dict):
            home = table if table in ALL_TABLES else _table_of(table, registry)
            where = f" Did you mean to write it under [{home}]?" if home and table not in ALL_TABLES else ""
            mistakes.add(f"top-level key {table!r}: a recipe's top level holds only tables "
                         f"({', '.join(f'[{t}]' for t in ALL_TABLES)}), not {value!r}.{where}"
                         if table not in ALL_TABLES else f"{table} must be a table ([{table}]), not {value!r}")
            raw = {k: v for k, v in raw.items() if k != table}
        elif table not in ALL_TABLES:
            mistakes.add(f"unknown table [{table}].{close_match(table, ALL_TABLES)} "
                         f"Allowed tables: {', '.join(ALL_TABLES)}.")
    tables: dict[str, dict[str, Any]] = {}
    for table, optset in CORE_OPTIONS.items():
        with mistakes.check():
            tables[table] = optset.resolve(raw.get(table, {}), table, skip=())
        tables.setdefault(table, {o.name: o.default for o in optset.options})
    if tables["run"]["name"] is None:
        tables["run"]["name"] = path.stem if path is not None else "run"
    src = tables["problems"]["source"]
    if src != "builtin" and src not in registry.names("problem_sources"):
        src_path = Path(src).expanduser()
        tables["problems"]["source"] = str(src_path if src_path.is_absolute() else (base / src_path).resolve())
    for table, kind in PLUGIN_TABLES.items():
        given = dict(raw.get(table, {}))
        name = given.get("name", DEFAULT_PLUGIN[table])
        if not isinstance(name, str):
            mistakes.add(f"{table}.name must be a string, not {name!r}")
            continue
        try:
            impl = registry.get(kind, name)
        except RecipeError as exc:
            mistakes.add(f"{table}.name: {exc}")
            continue
        optset = OptionSet(f"{table} {name!r}", tuple(getattr(impl, "options", ())))
        try:
            resolved = optset.resolve(given, table)
        except RecipeError as exc:
            mistakes.found.extend(exc.mistakes)
            continue
        for opt in optset.options:
            value = resolved.get(opt.name)
            if opt.is_path and isinstance(value, str):
                p = Path(value).expanduser()
                resolved[opt.name] = str(p if p.is_absolute() else (base / p).resolve())
        tables[table] = {"name": name, **resolved}
    mistakes.raise_if_any()
    return Recipe(path=path, raw=raw, tables=tables)
