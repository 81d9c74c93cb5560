"""Typed options: a plugin reads ``self.opts``, every declared option with its value or its declared
default, so a default is written once, in its ``Option``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kforge.generators.tune import TuneGenerator
from kforge.options import Option, Options
from kforge.searches.best_of_n import BestOfN

ROOT = Path(__file__).resolve().parents[1]


def test_declared_defaults_fill_what_is_not_given() -> None:
    declared = (Option("n", int, 4, "samples"), Option("ranges", dict, {"BLOCK": [64]}, "ranges"),
                Option("temperature", float, None, "t"))
    opts = Options("test", declared, {"n": 7, "temperature": None})
    assert (opts.n, opts.ranges, opts.temperature) == (7, {"BLOCK": [64]}, None)
    assert dict(opts) == {"n": 7, "ranges": {"BLOCK": [64]}, "temperature": None}
    opts.ranges["BLOCK"] = [1]  # a mutable default is copied: the declaration is untouched
    assert declared[1].default == {"BLOCK": [64]}
    with pytest.raises(AttributeError, match=r"declares no option 'tempurature'.*Did you mean 'temperature'"):
        _ = opts.tempurature


def test_a_plugin_built_from_python_gets_the_declared_defaults() -> None:
    search = BestOfN()
    assert search.opts.n == 4 and search.opts.retime_tolerance == 0.25 and search.config["n"] == 4
    assert BestOfN(n=2).opts.n == 2
    assert TuneGenerator().opts.max_changes == 2


PLUGIN_CODE = [*sorted((ROOT / "src/kforge/searches").glob("*.py")), *sorted((ROOT / "src/kforge/generators").glob("*.py")),
               *sorted(ROOT.glob("plugins/kforge-*/src/*/*.py"))]


@pytest.mark.parametrize("path", PLUGIN_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_plugin_repeats_a_default(path: Path) -> None:
    """``self.config.get("key", default)`` writes a default a second time; read ``self.opts.key``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "config"):
            raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} reads self.config.get(...): use self.opts")
