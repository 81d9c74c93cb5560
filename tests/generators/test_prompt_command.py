"""``kforge prompt`` and the shipped recipes: they validate, and print the exact prompt they would send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from generator_helpers import registry_with

from kforge.commands import prompt_cmd
from kforge.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = ("hosted.toml", "local-server.toml", "tune.toml")


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The new generators registered as the default registry (as they will be once in DEFAULT_PLUGINS)."""
    from kforge import plugins

    reg = registry_with()
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    return reg


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_validate(name: str, registry: Any) -> None:
    rec = load_recipe(REPO / "recipes" / name, registry=registry, env={})
    assert rec.tables["generator"]["name"] in ("anthropic", "openai", "tune")


def test_prompt_prints_system_and_user_messages(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # printing a prompt needs no key
    result = CliRunner().invoke(prompt_cmd, [str(REPO / "recipes" / "hosted.toml"), "--problem", "layernorm"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("===== system =====\n") and "\n===== user =====\n" in out
    assert "problem `layernorm`" in out and "class ModelNew(nn.Module)" in out


def test_prompt_json_is_the_cached_request(registry: Any) -> None:
    result = CliRunner().invoke(prompt_cmd, [str(REPO / "recipes" / "local-server.toml"), "--problem", "relu",
                                             "--json", "--sample", "2", "--set", "generator.temperature=0.2"])
    assert result.exit_code == 0, result.output
    request = json.loads(result.output)
    assert request["model"] == "Qwen/Qwen2.5-Coder-32B-Instruct" and request["generator"] == "openai"
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["sampling"]["temperature"] == 0.2 and isinstance(request["seed"], int)
    assert len(request["cache_key"]) == 32


def test_prompt_for_a_refinement(registry: Any, tmp_path: Path) -> None:
    parent = tmp_path / "parent.py"
    parent.write_text("class ModelNew:\n    pass\n")
    feedback = tmp_path / "feedback.json"
    feedback.write_text(json.dumps({"status": "compile_error", "compile_error": "NameError: tl"}))
    result = CliRunner().invoke(prompt_cmd, [str(REPO / "recipes" / "hosted.toml"), "--problem", "softmax",
                                             "--parent", str(parent), "--feedback", str(feedback),
                                             "--set", "generator.edit_format=diff"])
    assert result.exit_code == 0, result.output
    assert "current candidate to improve" in result.output and "NameError: tl" in result.output
    assert "<<<<<<< SEARCH" in result.output


def test_prompt_errors_are_usage_errors(registry: Any) -> None:
    runner = CliRunner()
    result = runner.invoke(prompt_cmd, [str(REPO / "recipes" / "hosted.toml"), "--problem", "softmx"])
    assert result.exit_code == 2 and "Did you mean 'softmax'" in result.output
    assert "not in the recipe's selection" in result.output
    result = runner.invoke(prompt_cmd, [str(REPO / "recipes" / "tune.toml")])
    assert result.exit_code == 2 and "sends no prompt" in result.output


def test_new_modules_import_nothing_heavy() -> None:
    """The generators and the prompt command run in the orchestrator: no torch, triton, textual or modal."""
    import subprocess
    import sys

    code = ("import json, sys\n"
            "import kforge.commands, kforge.generators.openai, kforge.generators.anthropic, kforge.generators.tune\n"
            "import kforge.prompts, kforge.extract, kforge.generators.cache\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'triton', 'textual', 'modal', 'httpx'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], "httpx is imported when the first request is made, the rest never"
