"""Fixtures for kforge-hf: tiny random models saved once per session, and a run context.

torch is held to one thread: the models are tiny, and intra-op threads on a busy machine make
them tens of times slower, not faster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    try:
        import torch
    except ImportError:  # the pure-Python tests (rewards, advantages, PUCT, the search's bookkeeping) still run
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def short_prompt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Template files that make the prompt a handful of tokens (the tiny model's context is short)."""
    folder = tmp_path_factory.mktemp("templates")
    (folder / "system.txt").write_text("a")
    (folder / "user.txt").write_text("$problem_id")
    return {"system_prompt": str(folder / "system.txt"), "user_template": str(folder / "user.txt")}


def resolve(cls: Any, **given: Any) -> dict[str, Any]:
    """Options as the recipe validator hands them over (defaults filled in, values checked)."""
    from kforge.options import OptionSet

    return OptionSet(f"{cls.name!r}", tuple(cls.options)).resolve(given, "table")


@pytest.fixture
def make_generator(tiny_model: Path, short_prompt: dict[str, str]) -> Any:
    from kforge_hf.generator import HFGenerator

    def make(**given: Any) -> HFGenerator:
        opts = {"model_path": str(tiny_model), "device": "cpu", "max_new_tokens": 2, "extract": "raw",
                "lora_r": 8, "lora_alpha": 16, "batch_size": 64, "train_micro_batch": 64, **short_prompt, **given}
        return HFGenerator(**resolve(HFGenerator, **opts))

    return make


@pytest.fixture
def make_ctx(tmp_path: Path) -> Any:
    from kforge.api import RunContext
    from kforge.backends.triton import TritonBackend
    from kforge.problems import builtin_problems

    def make(run_dir: Path | None = None, ids: tuple[str, ...] = ("relu",)) -> RunContext:
        problems = [p for p in builtin_problems() if p.id in ids]
        return RunContext(seed=0, problems=problems, backend=TritonBackend(), recipe={}, run_dir=run_dir)

    return make
