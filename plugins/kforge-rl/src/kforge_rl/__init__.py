"""kforge's judge as a reward for RL training loops (docs/service.md).

- :class:`KernelReward`: a TRL ``GRPOTrainer`` reward function (completions in, one float or None per
  completion out), the code taken from each completion by kforge's own extractor;
- :class:`KernelEnv`: a multi-turn environment (``reset`` -> prompt, ``step(completion)`` -> judge
  feedback, reward, done) for agent frameworks (verifiers, OpenEnv-style loops);
- :mod:`kforge_rl.grpo`: one plain-torch GRPO step (needs torch and transformers), used by
  ``examples/grpo_serve.py``.

A *judge* is anything with kforge's evaluation calls: an in-process
:class:`kforge.evaluator.Evaluator` or a :class:`kforge.client.Client` of a running ``kforge serve``.
"""

from kforge_rl.env import KernelEnv, Step
from kforge_rl.reward import KernelReward, completion_text

__all__ = ["KernelEnv", "KernelReward", "Step", "completion_text"]
