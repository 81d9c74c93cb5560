"""One GRPO step in plain torch and transformers (no TRL): sample a group of completions per prompt,
score them with a reward function of TRL's signature, normalise rewards within each group, and take
one policy-gradient step. Completions whose reward is None (infrastructure failures) are left out.

TRL's GRPOTrainer does the same with more (KL, clipping over several updates, vLLM); kforge's CI
trains with this instead because TRL pulls datasets, pandas and pyarrow. ``KernelReward`` works with
either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def sample(model: Any, tokenizer: Any, prompts: Sequence[str], group_size: int, max_new_tokens: int,
           temperature: float = 1.0, max_prompt_tokens: int = 2048
           ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``group_size`` completions per prompt (a prompt's group is consecutive): (texts, prompt+completion
    ids, attention mask over them, completion mask)."""
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left", truncation=True,
                    max_length=max_prompt_tokens)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                             num_return_sequences=group_size, pad_token_id=tokenizer.pad_token_id)
    completion = out[:, enc["input_ids"].shape[1]:]
    mask = torch.ones_like(completion, dtype=torch.float32)
    if tokenizer.eos_token_id is not None:  # tokens after the first end-of-sequence are padding
        ended = (completion == tokenizer.eos_token_id).long().cumsum(dim=1)
        mask = ((ended == 0) | ((ended == 1) & (completion == tokenizer.eos_token_id))).float()
    texts = tokenizer.batch_decode(completion * mask.long() + tokenizer.pad_token_id * (1 - mask.long()),
                                   skip_special_tokens=True)
    attention = torch.cat([enc["attention_mask"].repeat_interleave(group_size, dim=0), mask.long()], dim=1)
    return texts, out, attention, mask


def group_advantages(rewards: Sequence[float | None], group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantage, keep) per completion: reward minus its group's mean over its group's std; None rewards
    are not kept and do not count in their group's statistics."""
    r = torch.tensor([math.nan if x is None else float(x) for x in rewards]).view(-1, group_size)
    keep = ~torch.isnan(r)
    n = keep.sum(dim=1, keepdim=True).clamp(min=1)
    mean = torch.where(keep, r, 0.0).sum(dim=1, keepdim=True) / n
    var = torch.where(keep, (r - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / n
    adv = torch.where(keep, (r - mean) / (var.sqrt() + 1e-4), 0.0)
    return adv.view(-1), keep.view(-1)


def grpo_step(model: Any, tokenizer: Any, optimizer: Any, prompts: Sequence[str], columns: dict[str, list[Any]],
              reward_fn: Callable[..., list[float | None]], *, group_size: int = 4, max_new_tokens: int = 64,
              temperature: float = 1.0, max_prompt_tokens: int = 2048) -> dict[str, Any]:
    """Sample, reward (``reward_fn(completions=..., prompts=..., **columns)``, columns repeated per
    completion as TRL does), and update once. Returns figures for a log line."""
    texts, ids, attention, mask = sample(model, tokenizer, prompts, group_size, max_new_tokens, temperature,
                                         max_prompt_tokens)
    repeated = {k: [v for v in vals for _ in range(group_size)] for k, vals in columns.items()}
    rewards = reward_fn(completions=texts, prompts=[p for p in prompts for _ in range(group_size)], **repeated)
    adv, keep = group_advantages(rewards, group_size)
    model.train()
    start = ids.shape[1] - mask.shape[1]
    logits = model(input_ids=ids, attention_mask=attention).logits[:, start - 1:-1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, start:].unsqueeze(-1)).squeeze(-1)
    per_seq = (logp * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    kept = keep.float()
    loss = -(adv * per_seq * kept).sum() / kept.sum().clamp(min=1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scored = [x for x in rewards if x is not None]
    mean = sum(scored) / len(scored) if scored else None
    return {"loss": float(loss.detach()), "rewards": list(rewards), "mean_reward": mean,
            "dropped": len(rewards) - len(scored), "completions": texts}
