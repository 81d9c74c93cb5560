"""Train a causal LM with GRPO against a running ``kforge serve``: the judge is the reward.

    kforge serve --device cpu                       # or on a GPU box: kforge serve --host 0.0.0.0 --token T
    python examples/grpo_serve.py --server http://127.0.0.1:8765 --model /models/Qwen2.5-Coder-0.5B-Instruct \\
        --problems relu softmax --steps 20 --group-size 8

Each step prompts the model with kforge's own prompt for each problem (``KernelEnv.reset``), samples
a group of completions per prompt, has the server judge every candidate in one batch
(``KernelReward``: 0 for a failing kernel, log2(1 + speedup) for a correct one, None for an
infrastructure failure, which is left out), and takes one GRPO step (``kforge_rl.grpo``). Prints one
JSON line per step. Needs ``pip install -e plugins/kforge-rl`` and torch + transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="URL of a running kforge serve")
    ap.add_argument("--token", default=None, help="bearer token (if the server needs one)")
    ap.add_argument("--model", required=True, help="a local transformers causal-LM folder (nothing is downloaded)")
    ap.add_argument("--problems", nargs="+", default=["relu"], help="problem ids the server knows")
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--max-prompt-tokens", type=int, default=2048)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="an [eval] setting for every judged candidate, e.g. --eval trials=5")
    ap.add_argument("--save", default=None, help="folder to save the trained model to")
    return ap.parse_args(argv)


def _settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    import torch
    from kforge_rl import KernelEnv, KernelReward
    from kforge_rl.grpo import grpo_step
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kforge.client import Client

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.truncation_side = "left"  # keep the end of a long prompt: the task and the rules
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    log = []
    with Client(args.server, token=args.token) as client:
        env = KernelEnv(client, backend=args.backend)
        prompts = [prompt_text(tokenizer, env.reset(pid)) for pid in args.problems]
        reward_fn = KernelReward(client, backend=args.backend, **_settings(args.settings))
        for step in range(args.steps):
            stats = grpo_step(model, tokenizer, optimizer, prompts, {"problem_id": list(args.problems)}, reward_fn,
                              group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, max_prompt_tokens=args.max_prompt_tokens)
            statuses = [r.status if r is not None else "no code" for r in reward_fn.last_results]
            line = {"step": step, "loss": stats["loss"], "mean_reward": stats["mean_reward"],
                    "rewards": stats["rewards"], "dropped": stats["dropped"], "statuses": statuses}
            print(json.dumps(line), flush=True)
            log.append(line)
    if args.save:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
    return log


if __name__ == "__main__":
    main(sys.argv[1:])
