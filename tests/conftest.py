"""Shared fixtures for kforge's own tests.

- ``gpu``-marked tests are skipped unless a CUDA GPU is really usable; ``modal``-marked tests are
  skipped unless ``KFORGE_TEST_MODAL=1`` (they need credentials and network).
- Third-party plugins are NOT switched off globally (``plugins/`` holds tests of plugin discovery);
  tests that need only the built-ins ask for ``isolated_env`` (subprocesses) or ``builtin_registry``
  (in-process), which set ``KFORGE_LOAD_PLUGINS=""``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"
QUICKSTART_CANDIDATES = REPO / "recipes" / "quickstart" / "candidates"


def _cuda_available() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch install means no usable GPU
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (nvidia-smi and torch.cuda.is_available())")
        for item in gpu_items:
            item.add_marker(skip)
    if os.environ.get("KFORGE_TEST_MODAL") != "1":
        skip_modal = pytest.mark.skip(reason="Modal tests need credentials and network: set KFORGE_TEST_MODAL=1")
        for item in items:
            if "modal" in item.keywords:
                item.add_marker(skip_modal)


def _clean_env(**extra: str) -> dict[str, str]:
    """The current environment without kforge settings that would change what a test sees, with
    third-party plugins switched off (only the built-ins load)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KFORGE_") and k not in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")}
    env["KFORGE_LOAD_PLUGINS"] = ""
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def base_env() -> dict[str, str]:
    """Environment for kforge subprocesses that loads only the built-in plugins (do not modify)."""
    return _clean_env()


@pytest.fixture
def isolated_env(base_env: dict[str, str]) -> dict[str, str]:
    """A copy of ``base_env`` that a test may change."""
    return dict(base_env)


@pytest.fixture
def builtin_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real registry of the built-in plugins only (no entry points), for in-process tests."""
    from kforge import plugins

    for key in [k for k in os.environ if k.startswith("KFORGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "")
    plugins.reset_registry()
    yield plugins.get_registry()
    plugins.reset_registry()


KforgeRunner = Callable[..., subprocess.CompletedProcess]


def run_kforge(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m kforge ARGS`` as a real subprocess; text output captured."""
    return subprocess.run([sys.executable, "-m", "kforge", *map(str, args)], capture_output=True, text=True,
                          env=env if env is not None else _clean_env(), cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def kforge_cli() -> KforgeRunner:
    return run_kforge


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def parse_json_lines() -> Callable[[str], list[dict[str, Any]]]:
    return json_lines
