"""Built-in problem sources: kforge's own suite and KernelBench-format files or directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kforge.api import ProblemSource
from kforge.hookspecs import hookimpl
from kforge.problems import Problem, builtin_problems, check_downloads, load_problem_path, select


class BuiltinSource(ProblemSource):
    name = "builtin"
    description = "kforge's own problem suite (with small CPU shapes and example solutions)"

    def load(self, table: dict[str, Any]) -> list[Problem]:
        return builtin_problems()


class PathSource(ProblemSource):
    name = "path"
    description = "a KernelBench-format problem file, or a directory of them (e.g. a KernelBench checkout)"

    def load(self, table: dict[str, Any]) -> list[Problem]:
        problems = load_problem_path(Path(table["source"]).expanduser())
        check_downloads(select(problems, table.get("ids"), table.get("level")))
        return problems


@hookimpl
def register_problem_sources(register):
    register(BuiltinSource)
    register(PathSource)
