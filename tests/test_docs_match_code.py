"""The docs say what the code does: every recipe table's documented keys are its declared options,
and the documented JSON examples have the keys real output has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kforge.recipe import CORE_OPTIONS, DEFAULT_PLUGIN, PLUGIN_TABLES

REPO = Path(__file__).resolve().parents[1]
RECIPES_MD = (REPO / "docs" / "recipes.md").read_text()
OUTPUT_MD = (REPO / "docs" / "output.md").read_text()


def documented_keys(table: str) -> list[str]:
    """The keys of the first `| key | type | default | meaning |` table under ``### `[table]` ``."""
    section = RECIPES_MD.split(f"### `[{table}]`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows = section.split("| key | type | default | meaning |", 1)
    if len(rows) == 1:
        return []
    keys = []
    for line in rows[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        m = re.match(r"\| `(\w+)` \|", line)
        assert m, line
        keys.append(m.group(1))
    return keys


@pytest.mark.parametrize("table", sorted(CORE_OPTIONS))
def test_core_table_docs_list_every_declared_option(table: str) -> None:
    assert documented_keys(table) == [o.name for o in CORE_OPTIONS[table].options]


@pytest.mark.parametrize("table", sorted(PLUGIN_TABLES))
def test_default_plugin_docs_list_every_declared_option(table: str, builtin_registry: Any) -> None:
    impl = builtin_registry.get(PLUGIN_TABLES[table], DEFAULT_PLUGIN[table])
    declared = sorted(o.name for o in getattr(impl, "options", ()))
    assert sorted(documented_keys(table)) == declared


def json_blocks(text: str, starts: str) -> list[Any]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S) if b.startswith(starts)]


def same_keys(documented: Any, real: Any, where: str = "") -> None:
    """The same keys at every level (the executor's machine-dependent ``plan`` aside)."""
    if isinstance(documented, dict) and isinstance(real, dict):
        assert sorted(documented) == sorted(real), where
        for k in real:
            if isinstance(real[k], dict) and isinstance(documented[k], dict) and k not in ("plan", "versions"):
                same_keys(documented[k], real[k], f"{where}.{k}")


def test_dry_run_json_example_is_real_output(builtin_registry: Any) -> None:
    from click.testing import CliRunner

    from kforge.cli import cli

    (documented,) = json_blocks(RECIPES_MD, '{"event": "plan"')
    res = CliRunner().invoke(cli, ["run", str(REPO / "recipes" / "quickstart.toml"), "--dry-run", "--json"])
    assert res.exit_code == 0, res.stderr
    same_keys(documented, json.loads(res.stdout), "plan")


def test_eval_json_example_has_every_key_of_an_eval_result() -> None:
    from kforge.runtime import protocol as P

    (documented,) = json_blocks(OUTPUT_MD, '{"request_id"')
    real = P.EvalResult(request_id="r", problem_id="p", status=P.CORRECT).to_dict()
    assert sorted(documented) == sorted(real)
    assert "noisy" not in " ".join(documented["flags"]) or documented["device_kind"] == "cuda"
