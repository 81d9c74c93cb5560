"""Fixtures for the generator tests: a loopback server, an API key in the environment, generators
built from recipe-style options, and a run context over the built-in problems."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from generator_helpers import KEY_ENV, SECRET, resolve_options
from loopback import LoopbackServer


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture
def make_generator(server: LoopbackServer, api_key: str, tmp_path: Path) -> Callable[..., Any]:
    from kforge.generators.anthropic import AnthropicGenerator
    from kforge.generators.openai import OpenAIGenerator

    def make(wire: str = "openai", **given: Any) -> Any:
        cls = OpenAIGenerator if wire == "openai" else AnthropicGenerator
        base = server.url + ("/v1" if wire == "openai" else "")
        opts = {"model": "loopback-coder", "base_url": base, "api_key_env": KEY_ENV, "backoff_s": 0.01,
                "max_backoff_s": 5.0, "timeout_s": 5.0, "max_retries": 3, "cache": str(tmp_path / "cache"),
                "price_in_per_mtok": 3.0, "price_out_per_mtok": 15.0, **given}
        return cls(**resolve_options(cls, **opts))

    return make


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    from kforge.api import RunContext
    from kforge.backends.triton import TritonBackend
    from kforge.problems import builtin_problems

    return RunContext(seed=0, problems=builtin_problems(), backend=TritonBackend(), recipe={},
                      run_dir=tmp_path / "run")
