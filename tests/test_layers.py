"""The layering, checked by import-linter with the contracts in pyproject.toml:

- kforge.runtime (what ships to a GPU machine) imports nothing of kforge outside it;
- the store imports nothing of kforge;
- searches and generators never import executors, nor each other's modules;
- the dashboard never imports the engine.

import-linter reads every import, at module level or inside a function. What it cannot see, that
the orchestrator imports no torch, Textual or Modal *when it runs*, tests/test_import_hygiene.py
checks in fresh interpreters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else (shutil.which("lint-imports") or "lint-imports")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([_lint_imports(), "--no-cache", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def test_the_layering_contracts_are_kept() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 kept, 0 broken" in proc.stdout, proc.stdout


def test_a_broken_contract_fails(tmp_path: Path) -> None:
    """Control: the tool sees imports inside functions (the CLI imports the engine in one), so the
    contracts above are not kept vacuously."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "kforge"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "the CLI never imports the engine (false)"\ntype = "forbidden"\n'
                      'source_modules = ["kforge.cli"]\nforbidden_modules = ["kforge.engine"]\n')
    proc = _run("--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "kforge.cli -> kforge.engine" in proc.stdout, proc.stdout
