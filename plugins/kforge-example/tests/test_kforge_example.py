"""Tests for kforge-example. They need the plugin installed: pip install -e plugins/kforge-example."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from kforge.api import Proposal, RunContext
from kforge.plugins import build_registry, describe_plugins
from kforge.problems import builtin_problems
from kforge.recipe import validate

from kforge_example import SolutionsGenerator

DIST = "kforge-example"


@pytest.fixture
def registry(monkeypatch):
    """The registry as a plain ``kforge`` run builds it: every installed plugin, none blocked."""
    monkeypatch.delenv("KFORGE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("KFORGE_BLOCK_PLUGINS", raising=False)
    return build_registry()


def listed_plugins(**env: str) -> list[str]:
    """The plugin names ``kforge plugins --json`` prints, run as a real subprocess."""
    clean = {k: v for k, v in os.environ.items() if k not in ("KFORGE_LOAD_PLUGINS", "KFORGE_BLOCK_PLUGINS")}
    out = subprocess.run([sys.executable, "-m", "kforge", "plugins", "--json"], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return [p["name"] for p in json.loads(out.stdout)]


def context(backend: str = "triton") -> RunContext:
    registry = build_registry()
    return RunContext(seed=0, problems=builtin_problems(), backend=registry.get("backends", backend)(),
                      recipe={})


def generate(generator: SolutionsGenerator, problem_id: str, ctx: RunContext):
    proposal = Proposal(id=f"{problem_id}:s0", problem_id=problem_id, step=0, seed=0)
    (gen,) = asyncio.run(generator.generate([proposal], ctx))
    assert gen.proposal_id == proposal.id and gen.generator == "solutions"
    return gen


def test_registry_finds_the_generator(registry):
    assert registry.get("generators", "solutions") is SolutionsGenerator
    assert registry.items["generators"]["solutions"].plugin == DIST
    (entry,) = [p for p in describe_plugins(registry) if p["name"] == DIST]
    assert entry["version"] == version(DIST)
    assert entry["builtin"] is False
    assert entry["hooks"] == ["register_generators"]
    (item,) = entry["registers"]["generators"]
    assert item["name"] == "solutions"
    assert [o["name"] for o in item["options"]] == ["backend"]


def test_kforge_plugins_lists_it():
    assert DIST in listed_plugins()


def test_load_plugins_allow_list():
    assert DIST not in listed_plugins(KFORGE_LOAD_PLUGINS="")
    assert DIST in listed_plugins(KFORGE_LOAD_PLUGINS=DIST)


def test_block_plugins():
    assert DIST not in listed_plugins(KFORGE_BLOCK_PLUGINS=DIST)


def test_generates_the_solution_for_relu():
    ctx = context()
    gen = generate(SolutionsGenerator(), "relu", ctx)
    expected = ctx.problems_by_id["relu"].solutions()["triton"]
    assert gen.code == expected.read_text()
    assert gen.label == "relu.py" and gen.error is None


def test_unknown_problem_gets_no_code():
    gen = generate(SolutionsGenerator(), "no_such_problem", context())
    assert gen.code is None
    assert "no_such_problem" in gen.error


def test_backend_option_overrides_the_runs_backend():
    ctx = context("triton")
    gen = generate(SolutionsGenerator(backend="cuda"), "relu", ctx)
    assert gen.code == ctx.problems_by_id["relu"].solutions()["cuda"].read_text()
    gen = generate(SolutionsGenerator(backend="cuda"), "cumsum", ctx)
    assert gen.code is None  # cumsum has a Triton solution only
    assert "no cuda example solution" in gen.error


def test_recipe_accepts_the_generator_and_its_option(registry):
    recipe = validate({"generator": {"name": "solutions", "backend": "triton"}}, None, registry)
    assert recipe.tables["generator"] == {"name": "solutions", "backend": "triton"}
