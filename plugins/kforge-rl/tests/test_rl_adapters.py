"""kforge-rl against a real ``kforge serve`` on loopback with the CPU judge: the GRPO example takes one
real training step of a tiny model, the multi-turn environment runs an episode, and the TRL reward
function follows GRPO's calling convention."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from kforge.client import Client  # noqa: E402
from kforge.rewards import reward  # noqa: E402
from kforge.serve.launch import ServerProcess  # noqa: E402

from kforge_rl import KernelEnv, KernelReward, completion_text  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CORRECT = (REPO / "recipes" / "quickstart" / "candidates" / "relu" / "correct.py").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFORGE_")}
    env["KFORGE_LOAD_PLUGINS"] = ""
    with ServerProcess(["--device", "cpu", "--set", "eval.min_samples=0"],
                       db=tmp_path_factory.mktemp("rl") / "queue.db", env=env) as srv:
        yield srv


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("grpo_serve", REPO / "examples" / "grpo_serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpo_example_trains_one_step_against_the_server(server: ServerProcess, tmp_path: Path) -> None:
    import torch
    from rl_tiny import build_answer_model
    from transformers import AutoModelForCausalLM

    model_dir = build_answer_model(tmp_path / "tiny")
    saved = tmp_path / "trained"
    log = _load_example().main(["--server", server.url, "--model", str(model_dir), "--problems", "relu",
                                "--steps", "1", "--group-size", "4", "--max-new-tokens", "1", "--lr", "0.05",
                                "--seed", "1", "--save", str(saved)])
    assert len(log) == 1
    step = log[0]
    statuses, rewards = step["statuses"], step["rewards"]
    assert len(statuses) == len(rewards) == 4
    # every completion with code got the judge's verdict; prose got 0 without judge time
    assert "correct" in statuses and "incorrect" in statuses, statuses
    for status, value in zip(statuses, rewards):
        assert value == {"correct": 1.0, "incorrect": 0.0, "no code": 0.0}[status]
    assert step["dropped"] == 0 and step["loss"] != 0.0
    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(saved).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved


def test_environment_episode_with_judge_feedback(server: ServerProcess) -> None:
    with Client(server.url) as client:
        env = KernelEnv(client, max_turns=2)
        messages = env.reset("relu")
        assert [m["role"] for m in messages] == ["system", "user"]
        assert "class Model" in messages[1]["content"] and "ModelNew" in messages[1]["content"]
        first = env.step("I think a kernel would be nice.")  # no code: the model's fault, no judge time
        assert first.reward == 0.0 and not first.done and first.info["result"] is None
        assert "no code" in first.observation
        second = env.step([{"role": "assistant", "content": f"Here it is:\n```python\n{CORRECT}```"}])
    assert second.done and second.info["result"].status == "correct"
    assert second.reward == reward(second.info["result"]) == 1.0
    assert "correct" in second.observation
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("more")


def test_reward_function_follows_grpo_calling_convention() -> None:
    fn = KernelReward(judge=None)
    assert fn.__name__ == "kforge_kernel_reward"
    # TRL passes prompts, completions, completion_ids, the dataset's columns and trainer_state
    assert fn(prompts=["p"], completions=["no code at all"], completion_ids=[[1]], problem_id=["relu"],
              trainer_state=None) == [0.0]  # no code: nothing to judge
    with pytest.raises(ValueError, match="needs the dataset column 'problem_id'"):
        fn(prompts=["p"], completions=["x"], task=["relu"])
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
