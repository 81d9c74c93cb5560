"""Helper of benchmarks/gpu_ttt.sh: a tiny causal LM that writes ReLU kernels, and the TTT run's figures.

    python benchmarks/gpu_ttt.py build OUT/model [--seconds 20] [--max-steps 600]
    python benchmarks/gpu_ttt.py wait RUN_DIR --step 2 --pid PID     # returns once step 2 has a verdict
    python benchmarks/gpu_ttt.py report RUN_DIR [--json OUT.json]
    python benchmarks/gpu_ttt.py probe RUN_DIR

``build`` makes the model from nothing, offline: a byte-level BPE tokenizer trained on the corpus, a
4-layer Llama with random weights, then a few seconds of supervised training on ReLU kernels built
from independent choices (a right or a wrong body, block size, warps, one launch or two, a missing
colon now and then). The model thus samples real, varied kernels: correct ones at different speeds,
wrong ones, ones that do not compile. It is trained on exactly the prompt the ``hf`` generator sends
(recipes/ttt_gpu.toml's templates, the tokenizer's chat template), so TTT starts from a model whose
answers the judge can score. At the end it samples the model through the plugin's own Policy and
prints what fraction of its samples are correct by construction.

``wait`` polls the run's store (read only) until the ttt search is in ``--step`` with at least one
rollout scored, then returns 0 (the caller kills the run); 3 if the run ended first.

``report`` prints the per-step figures from the store (the search state's history), with the
verdicts of each step's rollouts and the device the judge ran on.

``probe`` loads the model with each step's adapter (``ttt/step-NNNN``) and prints the exact
probability it gives each kind of training variant (correct, slow, wrong, broken): how the policy
moved, free of sampling noise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "ttt_gpu.toml"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")

# -- the corpus: ReLU kernels from independent choices -------------------------------------------------
TEMPLATE = '''import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr){colon}
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    {body}
    tl.store(y_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        BLOCK_SIZE = {block}
        grid = (triton.cdiv(n, BLOCK_SIZE),)
{launches}        return y
'''
LAUNCH = "        relu_kernel[grid](x, y, n, BLOCK_SIZE=BLOCK_SIZE, num_warps={warps})\n"

# (value, weight, what it does to the verdict)
CHOICES: dict[str, list[tuple[Any, float, str]]] = {
    "colon": [(":", 0.85, "ok"), ("", 0.15, "compile_error")],
    "body": [("y = tl.where(x > 0, x, 0.0)", 0.3, "ok"), ("y = tl.maximum(x, 0.0)", 0.2, "ok"),
             ("y = tl.where(x > 0, x, 0.01 * x)", 0.5, "incorrect")],
    "block": [(256, 1 / 3, "ok"), (1024, 1 / 3, "ok"), (4096, 1 / 3, "ok")],
    "warps": [(4, 0.5, "ok"), (8, 0.5, "ok")],
    "launches": [(1, 0.7, "ok"), (2, 0.3, "slow")],
}


def variant(pick: dict[str, Any]) -> str:
    return TEMPLATE.format(colon=pick["colon"], body=pick["body"], block=pick["block"],
                           launches=LAUNCH.format(warps=pick["warps"]) * int(pick["launches"]))


def all_variants() -> list[tuple[dict[str, Any], float, str]]:
    """Every combination: (choices, probability, expected verdict: correct/slow/incorrect/compile_error)."""
    keys = list(CHOICES)
    out = []
    for combo in itertools.product(*(CHOICES[k] for k in keys)):
        pick = {k: c[0] for k, c in zip(keys, combo)}
        prob = 1.0
        for c in combo:
            prob *= c[1]
        effects = {c[2] for c in combo}
        verdict = ("compile_error" if "compile_error" in effects else "incorrect" if "incorrect" in effects
                   else "correct (slow)" if "slow" in effects else "correct")
        out.append((pick, prob, verdict))
    return out


def answer(code: str) -> str:
    return f"```python\n{code}```"


# -- the prompt: exactly what the hf generator sends ----------------------------------------------------
def prompt_messages(problem_id: str = "relu") -> list[dict[str, str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from kforge.backends.triton import TritonBackend
    from kforge.problems import builtin_problems
    from kforge.prompts import PromptSettings, build_prompt

    gen = tomllib.loads(RECIPE.read_text())["generator"]
    base = RECIPE.parent
    settings = PromptSettings.from_options({
        "system_prompt": str(base / gen["system_prompt"]), "user_template": str(base / gen["user_template"]),
        "template_dir": None, "example": gen.get("example", "other"), "edit_format": "full", "device": None,
        "feedback_max_chars": 4000})
    problem = {p.id: p for p in builtin_problems()}[problem_id]
    return build_prompt(problem, TritonBackend(), {}, {}, settings).messages()


# -- build -------------------------------------------------------------------------------------------
def build_tokenizer(corpus: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[*SPECIALS, *ROLES], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ROLES})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def cmd_build(args: argparse.Namespace) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    variants = all_variants()
    messages = prompt_messages()
    corpus = [answer(variant(p)) for p, _, _ in variants]
    # the chat-rendered prompt goes in the tokenizer's corpus too (its role tokens are special tokens)
    tok = build_tokenizer(corpus + [m["content"] for m in messages] * 50, args.vocab)
    prompt_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = list(tok(prompt_text, add_special_tokens=False)["input_ids"])
    assert tok.decode(prompt_ids, skip_special_tokens=False) == prompt_text, "the prompt does not round-trip"
    seqs: list[list[int]] = []
    for text in corpus:
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        assert tok.decode(ids) == text, "the tokenizer does not round-trip the code"
        seqs.append(ids + [tok.eos_token_id])
    probs = [w for _, w, _ in variants]
    longest = max(len(s) for s in seqs)
    print(f"tokenizer: {len(tok)} tokens; prompt {len(prompt_ids)} tokens; answers {min(len(s) for s in seqs)}-"
          f"{longest} tokens; {len(variants)} variants", flush=True)

    config = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    model.train()
    step, loss_ema, t0 = 0, None, time.time()
    plen = len(prompt_ids)
    while step < args.max_steps and time.time() - t0 < args.seconds:
        batch = [seqs[i] for i in rng.choices(range(len(seqs)), weights=probs, k=args.batch)]
        width = plen + max(len(s) for s in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        attn = torch.zeros_like(ids)
        for i, s in enumerate(batch):  # right padding: the prompt first, then the answer
            row = prompt_ids + s
            ids[i, :len(row)] = torch.tensor(row)
            labels[i, plen:len(row)] = torch.tensor(s)
            attn[i, :len(row)] = 1
        lr = args.lr * min(1.0, (step + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        value = float(loss.detach())
        loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
        if step % 50 == 0:
            print(f"  step {step}: loss {loss_ema:.4f} ({time.time() - t0:.1f} s)", flush=True)
    train_s = time.time() - t0
    loss_ema = float("nan") if loss_ema is None else loss_ema
    # the entropy the data has per answer: the floor of the summed loss (nats), for reference
    entropy = -sum(w * math.log(w) for w in probs)
    model.eval()
    model.cpu().save_pretrained(out)
    tok.save_pretrained(out)
    info = {"params": n_params, "layers": args.layers, "hidden": args.hidden, "vocab": len(tok),
            "train_steps": step, "train_s": round(train_s, 1), "loss_per_token_ema": round(loss_ema, 4),
            "data_entropy_nats_per_answer": round(entropy, 3), "prompt_tokens": plen, "longest_answer": longest,
            "device": str(device), "variants": len(variants)}
    mean_len = sum(w * len(s) for w, s in zip(probs, seqs)) / sum(probs)
    info["loss_floor_per_token"] = round(entropy / mean_len, 4)
    print(f"trained {step} steps in {train_s:.1f} s on {device}: loss/token {loss_ema:.4f} (the mix's own entropy: "
          f"{entropy / mean_len:.4f}); {n_params / 1e6:.2f}M parameters", flush=True)
    info.update(check_samples(out, messages, args.check, device))
    (out / "kforge_tiny.json").write_text(json.dumps(info, indent=2))
    print(f"build: {time.time() - t_start:.1f} s in all", flush=True)
    return 0


def check_samples(folder: Path, messages: list[dict[str, str]], n: int, device: Any) -> dict[str, Any]:
    """Sample the saved model through the plugin's Policy (the path the hf generator takes) and count
    how many samples are one of the training variants, by expected verdict."""
    if n <= 0:
        return {}
    from kforge_hf.policy import Policy

    from kforge.extract import extract_code

    known = {variant(p): verdict for p, _, verdict in all_variants()}
    policy = Policy(model_path=str(folder), device=str(device), dtype="auto", lora_r=8, lora_alpha=16)
    ids = policy.encode(policy.render(messages))
    t0 = time.time()
    samples = policy.sample([ids] * n, list(range(10_000, 10_000 + n)), [1.0] * n, None, 512)
    sample_s = time.time() - t0
    counts: dict[str, int] = {}
    for s in samples:
        ex = extract_code(policy.decode(s.tokens), None, s.finish == "length")
        key = "no code" if ex.code is None else known.get(ex.code, "not a training variant")
        counts[key] = counts.get(key, 0) + 1
    tokens = [len(s.tokens) for s in samples]
    print(f"{n} samples at temperature 1 in {sample_s:.1f} s (mean {sum(tokens) / n:.0f} tokens): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
    expected = {}
    for _, w, verdict in all_variants():
        expected[verdict] = expected.get(verdict, 0.0) + w
    print("training mix: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(expected.items())), flush=True)
    return {"check_samples": n, "check_counts": counts, "check_sample_s": round(sample_s, 2)}


# -- wait --------------------------------------------------------------------------------------------
def _search_state(db: Path) -> dict[str, Any] | None:
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT value FROM state WHERE key = 'search'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return json.loads(row[0]) if row else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by the shell) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmd_wait(args: argparse.Namespace) -> int:
    db = Path(args.run_dir) / "kforge.db"
    t0 = time.time()
    seen_round: float | None = None
    while time.time() - t0 < args.timeout:
        state = _search_state(db)
        rnd = (state or {}).get("round")
        if state and state.get("step") == args.step and rnd:
            seen_round = seen_round or time.time()
            told = len(rnd.get("rewards") or {})
            if told >= args.min_told or time.time() - seen_round > args.grace:
                print(f"step {args.step} in progress: {told} of {rnd.get('asked')} rollouts scored", flush=True)
                return 0
        elif state and int(state.get("step") or 0) > args.step:
            print(f"the run is past step {args.step} already", flush=True)
            return 3
        if args.pid and not _alive(args.pid):
            print("the run ended before the step started", flush=True)
            return 3
        time.sleep(args.poll)
    print(f"timed out after {args.timeout} s waiting for step {args.step}", flush=True)
    return 4


def cmd_finished(args: argparse.Namespace) -> int:
    state = _search_state(Path(args.run_dir) / "kforge.db") or {}
    done = state.get("round") is None and int(state.get("step") or 0) >= int(state.get("steps") or 1)
    print(f"search state: step {state.get('step')} of {state.get('steps')}, round in progress: "
          f"{state.get('round') is not None}")
    return 0 if done else 1


# -- report ------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    db = run / "kforge.db"
    state = _search_state(db) or {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    props = con.execute("SELECT id, params, outcome, created FROM proposals ORDER BY seq").fetchall()
    cands = {r["proposal_id"]: dict(r) for r in con.execute("SELECT id, proposal_id, meta FROM candidates")}
    results = {r["candidate_id"]: dict(r) for r in con.execute("SELECT candidate_id, status, speedup, device, "
                                                               "created FROM results")}
    starts = [(float(r["ts"]), json.loads(r["data"])) for r in
              con.execute("SELECT ts, data FROM events WHERE type = 'run_started' ORDER BY seq")]
    con.close()
    resumed_at = [ts for ts, e in starts if e.get("resumed")]
    per_step: dict[int, dict[str, Any]] = {}
    devices: set[str] = set()
    for p in props:
        params = json.loads(p["params"] or "{}")
        s = int(params.get("ttt_step", -1))
        d = per_step.setdefault(s, {"proposals": 0, "judged": 0, "duplicates": 0, "no_code": 0, "verdicts": {},
                                    "adapter_versions": set(), "times": []})
        d["proposals"] += 1
        d["times"].append(float(p["created"] or 0))
        outcome = p["outcome"] or ""
        if outcome.startswith("duplicate of "):
            d["duplicates"] += 1
        elif outcome.startswith("no candidate"):
            d["no_code"] += 1
        c = cands.get(p["id"])
        if c is not None:
            d["judged"] += 1
            meta = json.loads(c["meta"] or "{}")
            d["adapter_versions"].add(meta.get("adapter_version"))
            r = results.get(c["id"])
            if r is not None:
                d["verdicts"][r["status"]] = d["verdicts"].get(r["status"], 0) + 1
                d["times"].append(float(r["created"] or 0))
                if r["device"]:
                    devices.add(r["device"])
    for d in per_step.values():  # which process ran the step: the first, the resumed one, or both
        if not resumed_at:
            d["session"] = "first"
        else:
            before = any(t < resumed_at[0] for t in d["times"])
            after = any(t >= resumed_at[0] for t in d["times"])
            d["session"] = "first + resumed" if before and after else "resumed" if after else "first"
    history = state.get("history") or []
    print(f"run {run}")
    prov = run / "provenance.json"
    if prov.is_file():
        info = json.loads(prov.read_text()).get("device") or {}
        print(f"judge device: {info.get('device')} ({info.get('device_kind')}); torch {info.get('torch')}, "
              f"triton {info.get('triton')}, cuda {info.get('cuda')}")
    print(f"devices in results: {', '.join(sorted(devices)) or '-'}")
    print(f"sessions: {len(starts)} (" + ", ".join("resumed" if e.get("resumed") else "new" for _, e in starts) + ")")
    cols = ["step", "rollouts", "reward_mean", "reward_max", "correct_rate", "best_speedup_step", "best_speedup",
            "kl", "kl_old", "lr", "loss", "grad_norm", "clip_fraction", "beta_mean", "trained_rollouts",
            "adapter_version", "buffer_size", "train_s", "step_s"]

    def fmt(v: Any, digits: int = 4) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    print("\nper-step figures (store: state 'search', history)")
    print(" | ".join(cols))
    for m in history:
        print(" | ".join(fmt(m.get(c)) for c in cols))
    print("\nper-step rollouts (store: proposals, candidates, results)")
    print("step | session | proposals | judged | duplicates | no code | verdicts of the judged | adapter version sampled")
    for s in sorted(per_step):
        d = per_step[s]
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(d["verdicts"].items())) or "-"
        versions = ",".join(str(v) for v in sorted(x for x in d["adapter_versions"] if x is not None)) or "-"
        print(f"{s} | {d['session']} | {d['proposals']} | {d['judged']} | {d['duplicates']} | {d['no_code']} | "
              f"{verdicts} | {versions}")
    print(f"\nsearch state: step {state.get('step')}/{state.get('steps')}, round in progress: "
          f"{state.get('round') is not None}, checkpoint {state.get('checkpoint')}")
    metrics_file = run / "ttt" / "metrics.jsonl"
    if metrics_file.is_file():
        lines = metrics_file.read_text().splitlines()
        print(f"ttt/metrics.jsonl: {len(lines)} lines (steps {[json.loads(x)['step'] for x in lines]})")
    # the table of docs/ttt.md ("GPU run"), ready to paste
    print("\nmarkdown (docs/ttt.md, GPU run):")
    print("| step | ran in | rollouts | judged / dup. / no code | correct rate | reward mean | reward max | "
          "best speedup (step / run) | KL | lr | loss | grad norm | trained | step s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in history:
        d = per_step.get(int(m["step"]), {})
        print(f"| {m['step']} | {d.get('session', '-')} | {m.get('rollouts')} | {d.get('judged', '-')} / "
              f"{d.get('duplicates', '-')} / {d.get('no_code', '-')} | {fmt(m.get('correct_rate'), 3)} | "
              f"{fmt(m.get('reward_mean'), 3)} | {fmt(m.get('reward_max'), 3)} | {fmt(m.get('best_speedup_step'), 3)} / "
              f"{fmt(m.get('best_speedup'), 3)} | {fmt(m.get('kl'), 3)} | {fmt(m.get('lr'), 3)} | {fmt(m.get('loss'), 3)} "
              f"| {fmt(m.get('grad_norm'), 3)} | {m.get('trained_rollouts')} | {fmt(m.get('step_s'), 3)} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"history": history, "per_step": {
            s: {**{k: v for k, v in d.items() if k != "times"},
                "adapter_versions": sorted(x for x in d["adapter_versions"] if x is not None)}
            for s, d in per_step.items()}, "devices": sorted(devices)}, indent=2, default=str))
    return 0


# -- probe -------------------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    """The model's exact probability of each training variant, by verdict, under the base model and
    under the adapter of every step checkpoint: how the policy moved, without sampling noise."""
    import torch
    from kforge_hf.policy import Policy, TrainItem

    run = Path(args.run_dir)
    gen = json.loads((run / "recipe.json").read_text())["generator"]
    if gen.get("device", "auto") == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    policy = Policy(model_path=gen["model_path"], device=gen.get("device") or "auto", dtype=gen.get("dtype") or "auto",
                    lora_r=int(gen.get("lora_r") or 16), lora_alpha=int(gen.get("lora_alpha") or 32))
    prompt_ids = policy.encode(policy.render(prompt_messages()))
    eos = policy.tokenizer.eos_token_id
    variants = all_variants()
    items = [TrainItem(prompt_ids, policy.encode(answer(variant(p))) + [eos], 0.0) for p, _, _ in variants]
    classes = ["correct", "correct (slow)", "incorrect", "compile_error"]

    def mass(adapter: str | None) -> dict[str, float]:
        out = dict.fromkeys(classes, 0.0)
        for i in range(0, len(items), 24):
            lp, m = policy.completion_logprobs(items[i:i + 24], adapter=adapter)
            for j, total in enumerate((lp * m).sum(1).tolist()):
                out[variants[i + j][2]] += math.exp(total)
        return out

    rows = [("base model (no adapter)", mass("base"))]
    for folder in sorted((run / "ttt").glob("step-*")):
        if (folder / "adapter" / "adapter_model.safetensors").is_file():
            policy.load(folder)
            rows.append((f"after {folder.name} (adapter v{policy.version})", mass(None)))
    print("probability of sampling each kind of training variant exactly (temperature 1), per checkpoint")
    print("| checkpoint | " + " | ".join(classes) + " | all variants | correct among variants |")
    print("|---" * (len(classes) + 3) + "|")
    for name, m in rows:
        total = sum(m.values())
        print(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in classes) + f" | {total:.3f} | "
              f"{(m['correct'] + m['correct (slow)']) / total if total else 0:.3f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build, warm-start and save the tiny model")
    b.add_argument("out")
    b.add_argument("--seconds", type=float, default=30.0, help="most seconds of warm-start training")
    b.add_argument("--max-steps", type=int, default=600)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--lr", type=float, default=2e-3)
    b.add_argument("--layers", type=int, default=4)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--vocab", type=int, default=1024)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default=None)
    b.add_argument("--check", type=int, default=32, help="samples drawn to check the model (0: none)")
    w = sub.add_parser("wait", help="wait until the run is in a step with a scored rollout")
    w.add_argument("run_dir")
    w.add_argument("--step", type=int, required=True)
    w.add_argument("--min-told", type=int, default=1)
    w.add_argument("--grace", type=float, default=60.0, help="return anyway this long after the step started")
    w.add_argument("--pid", type=int, default=0, help="the run's process: stop waiting if it is gone")
    w.add_argument("--timeout", type=float, default=600.0)
    w.add_argument("--poll", type=float, default=0.05)
    r = sub.add_parser("report", help="print the per-step figures from the store")
    r.add_argument("run_dir")
    r.add_argument("--json", default=None)
    pr = sub.add_parser("probe", help="the exact probability of each kind of variant, per step checkpoint")
    pr.add_argument("run_dir")
    st = sub.add_parser("finished", help="exit 0 if the run's search is done, else 1")
    st.add_argument("run_dir")
    args = ap.parse_args(argv)
    return {"build": cmd_build, "wait": cmd_wait, "report": cmd_report, "probe": cmd_probe,
            "finished": cmd_finished}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
