"""kforge-hf: a local Hugging Face causal LM as a kforge generator, and test-time training.

- ``hf`` generator (:mod:`kforge_hf.generator`): any causal LM in a local folder, its chat template,
  seeded batched sampling on the GPU, LoRA adapters (loaded, swapped, saved), tokens counted, and
  ``train_step`` for on-policy LoRA updates.
- ``ttt`` search (:mod:`kforge_hf.ttt`): steps of groups x rollouts from PUCT-chosen start states,
  rewards from the judge, pluggable advantages (mean, leave-one-out, entropic, adaptive entropic),
  one LoRA update per step, checkpointed so ``kforge resume`` continues.

Importing this module (which ``kforge`` does to build its plugin registry) imports neither torch nor
transformers; the model is loaded the first time the generator needs it. docs/ttt.md has the guide.
"""

from __future__ import annotations

import kforge

from kforge_hf.generator import HFGenerator
from kforge_hf.ttt import TTTSearch

__all__ = ["HFGenerator", "TTTSearch"]


@kforge.hookimpl
def register_generators(register):
    register(HFGenerator)


@kforge.hookimpl
def register_searches(register):
    register(TTTSearch)
