"""The orchestrator must not import torch, triton, textual or modal: ``kforge --help`` stays fast and
runs on a laptop with none of them working. Checked in fresh interpreters, since this process may
already have imported torch for other tests.

What import-linter checks (which kforge module may import which: tests/test_layers.py) is not
repeated here; it cannot tell an import at module level from one inside a function, so whether a
heavy package is really loaded when the CLI runs is checked here, by looking at ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"

HEAVY = ("torch", "triton", "textual", "modal")

_PROBE = """
import json, sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps(heavy))
"""


def _heavy_modules_after(body: str, env: dict[str, str]) -> list[str]:
    code = _PROBE.format(body=body, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_all_orchestrator_modules_together_import_nothing_heavy(isolated_env: dict[str, str]) -> None:
    body = ("import kforge.cli, kforge.engine, kforge.recipe, kforge.executors.local, kforge.store, kforge.metrics, "
            "kforge.output, kforge.report, kforge.fmt")
    assert _heavy_modules_after(body, isolated_env) == []


def test_building_the_plugin_registry_imports_nothing_heavy(isolated_env: dict[str, str]) -> None:
    """Loading every built-in plugin (backends included) must stay torch-free too."""
    body = "from kforge.plugins import get_registry; get_registry()"
    assert _heavy_modules_after(body, isolated_env) == []


def test_dry_run_imports_nothing_heavy(isolated_env: dict[str, str]) -> None:
    """A whole ``kforge run --dry-run`` (recipe, registry, engine construction, plan) stays torch-free."""
    body = (
        "from kforge.cli import cli\n"
        f"try:\n    cli(['run', {str(QUICKSTART)!r}, '--dry-run', '--json'], standalone_mode=False)\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    assert _heavy_modules_after(body, isolated_env) == []


def test_python_m_kforge_help_exits_0(isolated_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "kforge", "--help"], capture_output=True, text=True,
                          env=isolated_env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "eval", "plugins", "problems"):
        assert command in proc.stdout
    assert "Traceback" not in proc.stderr


def test_version_flag(isolated_env: dict[str, str]) -> None:
    import kforge

    proc = subprocess.run([sys.executable, "-m", "kforge", "--version"], capture_output=True, text=True,
                          env=isolated_env, cwd=REPO, timeout=60)
    assert proc.returncode == 0
    assert kforge.__version__ in proc.stdout


def test_probe_detects_a_heavy_import(isolated_env: dict[str, str]) -> None:
    """Control: the probe really sees heavy modules, so the checks above are not vacuous."""
    assert "torch" in _heavy_modules_after("import torch", isolated_env)
