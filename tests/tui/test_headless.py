"""The dashboard's headless parts load neither Textual nor matplotlib (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ("kforge.commands.tui", "kforge.commands.report", "kforge.report", "kforge.tui", "kforge.tui.model",
           "kforge.tui.launch")


def test_headless_modules_import_no_textual_and_no_matplotlib(isolated_env: dict[str, str]) -> None:
    code = (f"import sys, json\nimport {', '.join(MODULES)}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'matplotlib'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=isolated_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_probe_sees_textual_when_the_app_is_imported(isolated_env: dict[str, str]) -> None:
    code = "import sys\nimport kforge.tui.app\nprint('textual' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=isolated_env, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr
