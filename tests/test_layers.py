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
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import kforge

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else (shutil.which("lint-imports") or "lint-imports")


def test_the_layering_contracts_are_kept() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([_lint_imports(), "--no-cache"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 kept, 0 broken" in proc.stdout, proc.stdout


def test_the_everything_but_lists_name_every_module() -> None:
    """A new module under src/kforge must be forbidden to the runtime and the store too."""
    contracts = {c["id"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
                 ["contracts"]}
    modules = {f"kforge.{m.name}" for m in pkgutil.iter_modules(kforge.__path__) if m.name != "__main__"}
    assert set(contracts["runtime"]["forbidden_modules"]) == modules - {"kforge.runtime"}
    assert set(contracts["store"]["forbidden_modules"]) == modules - {"kforge.store"}
