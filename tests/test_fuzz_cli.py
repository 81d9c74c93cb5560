"""Fuzz the CLI's front doors with random and truncated recipes, candidates and problem files: each
gets a clear error or works, never a traceback. Fixed seed, a few dozen cases, no GPU, a few seconds
(the candidate cases are chosen to be decided before a judge starts, bar one)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kforge.cli import cli

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = (REPO / "recipes" / "quickstart.toml").read_text()
PROBLEM = (REPO / "src" / "kforge" / "problems" / "builtin").glob("*.py")
CANDIDATE = (REPO / "recipes" / "quickstart" / "candidates" / "relu" / "correct.py").read_text()
VALUES = ["-1", "0", "nan", "inf", "-inf", "1e400", "100000000000000000000", '"x"', "[]", "[1, 2]", "{}",
          "true", '"../../nowhere"', '""', "3.5", '"auto"', '["relu", 5]', "{a = 1}"]


def mutate(text: str, rng: random.Random) -> bytes:
    """One of: a truncation, a flipped byte, a line with a random value, a deleted line, binary noise."""
    how = rng.randrange(5)
    data = text.encode()
    if how == 0:
        return data[:rng.randrange(len(data))]
    if how == 1:
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    if how == 2 and "=" in lines[i]:
        lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(VALUES)
    elif how == 3:
        del lines[i]
    else:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    return "\n".join(lines).encode()


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def no_traceback(res: Result, allowed: tuple[int, ...], what: bytes) -> None:
    exc = res.exception
    assert exc is None or isinstance(exc, SystemExit), f"{exc!r} on input {what[:300]!r}"
    assert "Traceback" not in res.output + res.stderr, what[:300]
    assert res.exit_code in allowed, (res.exit_code, res.stderr[-500:], what[:300])
    if res.exit_code == 2:
        assert res.stderr.startswith("Error: "), res.stderr


@pytest.fixture(autouse=True)
def _builtins(builtin_registry: Any) -> None:
    """Built-in plugins only."""


def test_random_recipes(tmp_path: Path) -> None:
    rng = random.Random(21)
    for case in range(40):
        data = mutate(QUICKSTART, rng).replace(b'out = "runs"', f'out = "{tmp_path}"'.encode())
        path = tmp_path / f"r{case}.toml"
        path.write_bytes(data)
        (tmp_path / "quickstart").mkdir(exist_ok=True)
        res = invoke("run", path, "--dry-run", "--json")
        no_traceback(res, (0, 2), data)
        assert not list(tmp_path.glob("quickstart-*")), "a dry run created a run directory"


def test_random_problem_files(tmp_path: Path) -> None:
    rng = random.Random(22)
    sources = [p.read_text() for p in sorted(PROBLEM)][:4]
    for case in range(30):
        data = mutate(rng.choice(sources), rng)
        path = tmp_path / f"p{case}.py"
        path.write_bytes(data)
        no_traceback(invoke("problems", "list", "--source", path), (0, 2), data)
        no_traceback(invoke("problems", "show", path.stem, "--source", path, "--json"), (0, 2), data)


@pytest.mark.slow
def test_random_candidates(tmp_path: Path) -> None:
    rng = random.Random(23)
    cases = [bytes(rng.randrange(256) for _ in range(64)),  # binary: refused before any judge
             CANDIDATE.encode("utf-16"),  # another encoding
             b"\xff" + CANDIDATE.encode(),
             CANDIDATE.encode()[: len(CANDIDATE) // 2]]  # truncated text: a compile error from the judge
    for case, data in enumerate(cases):
        path = tmp_path / f"c{case}.py"
        path.write_bytes(data)
        no_traceback(invoke("eval", path, "--problem", "relu", "--set", "eval.min_samples=0"), (1, 2), data)
