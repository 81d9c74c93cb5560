"""Test-time training on a tiny random model: the reward favours one completion, and the probability
the model gives that completion rises step by step."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from helpers import Driver, verdict  # noqa: E402
from kforge.api import Proposal  # noqa: E402

from kforge_hf.ttt import TTTSearch  # noqa: E402


def pick_target(gen: Any, prompt_ids: list[int], alphabet: str, near: float) -> tuple[str, float]:
    """The two-character answer whose starting probability is closest to ``near``: rare enough to
    have room to grow, common enough that the first steps sample it now and then."""
    policy = gen.policy
    probs = {"".join(t): math.exp(policy.sequence_logprob(prompt_ids, policy.encode("".join(t))))
             for t in itertools.product(alphabet, repeat=2)}
    target = min(probs, key=lambda t: abs(probs[t] - near))
    return target, probs[target]


@pytest.mark.parametrize("advantage", ["loo", "entropic_adaptive"])
def test_probability_of_the_rewarded_completion_rises(make_generator: Any, make_ctx: Any, advantage: str) -> None:
    from tiny import ALPHABET

    gen = make_generator(max_new_tokens=2, temperature=1.0)
    ctx = make_ctx()
    prompt = gen.build_prompt(Proposal(id="x", problem_id="relu", step=0, seed=0), ctx)
    prompt_ids = gen.policy.encode(gen.policy.render(prompt.messages()))
    target, p0 = pick_target(gen, prompt_ids, ALPHABET, 0.03)
    assert p0 < 0.05

    search = TTTSearch(steps=8, groups=2, rollouts=16, advantage=advantage, reward="linear", learning_rate=0.02,
                       reuse=False, track_kl=True)
    search.setup(ctx)  # finds the generator: the most recent hf generator (no ctx.generator here)
    assert search.generator is gen

    def judge(code: str, cid: str, pid: str) -> Any:
        return verdict(code, cid, pid, target)

    driver = Driver(search, gen, ctx, judge)
    probs = [p0]
    while not search.done():
        driver.step()
        probs.append(math.exp(gen.policy.sequence_logprob(prompt_ids, gen.policy.encode(target))))
    history = search.history
    assert [m["step"] for m in history] == list(range(8))
    assert gen.adapter_version == sum(1 for m in history if m["trained_rollouts"])
    # the completion the reward favours went from rare to the model's usual answer
    assert probs[-1] > 0.5 and probs[-1] > 10 * p0, probs
    assert max(probs[:3]) < probs[-1]
    assert history[-1]["reward_mean"] > 0.4 > history[0]["reward_mean"]
    assert history[-1]["reward_max"] == 1.0 and history[-1]["best_speedup"] == 1.0
    trained = [m for m in history if m["trained_rollouts"]]
    assert all(m["kl"] is not None and m["kl"] >= 0 and m["lr"] == 0.02 and math.isfinite(m["loss"])
               for m in trained)
    assert trained[-1]["kl"] > 0.05  # the policy has moved away from the base model
