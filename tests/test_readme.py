"""The README opens with the two commands a new user runs; CI runs the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_install_and_test_commands():
    cmds = _readme_commands()
    assert len(cmds) >= 2
    quickstart, tests = cmds[0], cmds[1]
    assert quickstart.endswith("kforge run recipes/quickstart.toml")
    assert "pytest" in tests and "[local,test]" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert _readme_commands()[1] in ci


def test_quickstart_recipe_exists_and_points_at_candidates():
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    assert 'path = "quickstart/candidates"' in text
    assert (ROOT / "recipes" / "quickstart" / "candidates").is_dir()
