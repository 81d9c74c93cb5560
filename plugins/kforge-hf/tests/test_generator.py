"""The hf generator on a tiny random model: loading from disk only, chat template, seeded batched
sampling, token counts, sampling log-probs, LoRA adapters (saved, loaded, swapped), train_step."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from kforge.api import Proposal  # noqa: E402
from kforge.options import RecipeError  # noqa: E402

from kforge_hf.generator import HFGenerator  # noqa: E402


def props(n: int, seed0: int = 100, **params: Any) -> list[Proposal]:
    return [Proposal(id=f"p{i}", problem_id="relu", step=0, seed=seed0 + i, params={"sample": i, **params})
            for i in range(n)]


def generate(gen: HFGenerator, proposals: list[Proposal], ctx: Any) -> list[Any]:
    return asyncio.run(gen.generate(proposals, ctx))


def test_a_missing_model_fails_clearly_and_nothing_is_downloaded(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="never downloads"):
        HFGenerator(model_path=str(tmp_path / "no-such-model"))
    with pytest.raises(RecipeError, match="never downloads"):
        HFGenerator(model_path="Qwen/Qwen2.5-0.5B")  # a hub name is not a folder here
    with pytest.raises(RecipeError, match="model_path is required"):
        HFGenerator()


def test_registry_and_import_stay_light() -> None:
    """The plugin registers through the entry point, and importing it loads neither torch nor
    transformers (kforge builds its registry on every command)."""
    code = ("import json, sys\nfrom kforge.plugins import build_registry\nr = build_registry()\n"
            "print(json.dumps([r.names('generators'), r.names('searches'), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft'))]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFORGE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    gens, searches, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert "hf" in gens and "ttt" in searches
    assert heavy == []


def test_seeded_batched_sampling(make_generator: Any, make_ctx: Any) -> None:
    gen = make_generator(max_new_tokens=6)
    ctx = make_ctx()
    batch = generate(gen, props(12), ctx)
    # a sample depends on its seed, not on the batch it is drawn in or its place there
    alone = generate(gen, [props(12)[5]], ctx)[0]
    assert alone.code == batch[5].code
    shuffled = generate(gen, list(reversed(props(12))), ctx)
    assert [g.code for g in reversed(shuffled)] == [g.code for g in batch]
    small = make_generator(max_new_tokens=6, batch_size=5)  # other batch boundaries
    assert [g.code for g in generate(small, props(12), ctx)] == [g.code for g in batch]
    # different seeds give different samples
    assert len({tuple(gen.rollout(p.id)["completion_ids"]) for p in props(12)}) >= 8
    other = generate(gen, props(12, seed0=900), ctx)
    assert [g.code for g in other] != [g.code for g in batch]


def test_generations_count_tokens_and_record_the_sample(make_generator: Any, make_ctx: Any) -> None:
    gen = make_generator(max_new_tokens=5, extract="code")
    ctx = make_ctx()
    gens = generate(gen, props(4), ctx)
    policy = gen.policy
    prompt = gen.build_prompt(props(1)[0], ctx)
    prompt_ids = policy.encode(policy.render(prompt.messages()))
    for p, g in zip(props(4), gens):
        r = gen.rollout(p.id)
        assert g.tokens_in == len(prompt_ids) == len(r["prompt_ids"]) and r["prompt_ids"] == prompt_ids
        assert g.tokens_out == len(r["completion_ids"]) <= 5
        assert g.cost_usd == 0.0 and g.generator == "hf" and g.model == Path(str(gen.model_path)).name
        assert g.meta["seed"] == p.seed and g.meta["adapter_version"] == 0 and g.meta["prompt_hash"] == prompt.hash()
        assert g.meta["finish_reason"] in ("stop", "length")
        # a random model writes no ModelNew: extraction fails like for an API model
        assert g.code is None and g.error.startswith("hf: ")
    assert gen.usage["tokens_out"] == sum(g.tokens_out for g in gens)


def test_sampling_logprobs_match_a_forward_pass(make_generator: Any, make_ctx: Any) -> None:
    gen = make_generator(max_new_tokens=6, temperature=0.7)
    generate(gen, props(6), make_ctx())
    from kforge_hf.policy import TrainItem

    for p in props(6):
        r = gen.rollout(p.id)
        lp, mask = gen.policy.completion_logprobs([TrainItem(r["prompt_ids"], r["completion_ids"], 0.0, 0.7)])
        teacher = lp[mask].tolist()
        assert teacher == pytest.approx(r["logprobs"], abs=1e-4)


def test_samples_follow_the_model_distribution(make_generator: Any, make_ctx: Any) -> None:
    """The seeded Gumbel draw is an exact sample: first-token frequencies match the model's softmax."""
    gen = make_generator(max_new_tokens=1)
    n = 600
    gens = generate(gen, props(n, seed0=10_000), make_ctx())
    assert len(gens) == n
    first = [gen.rollout(p.id)["completion_ids"][0] for p in props(n, seed0=10_000)]
    prompt_ids = gen.rollout("p0")["prompt_ids"]
    with torch.no_grad():
        logits = gen.policy.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    probs = torch.softmax(logits.float(), -1)
    top = int(probs.argmax())
    freq = first.count(top) / n
    sd = math.sqrt(probs[top] * (1 - probs[top]) / n)
    assert abs(freq - float(probs[top])) < 4 * sd + 1e-3


def test_greedy_and_top_p(make_generator: Any, make_ctx: Any) -> None:
    gen = make_generator(max_new_tokens=4)
    ctx = make_ctx()
    greedy = generate(gen, props(5, temperature=0.0), ctx)
    assert len({g.code for g in greedy}) == 1  # temperature 0: the same answer whatever the seed
    narrow = make_generator(max_new_tokens=1, top_p=1e-6)
    generate(narrow, props(8), ctx)
    firsts = {tuple(narrow.rollout(p.id)["completion_ids"]) for p in props(8)}
    assert len(firsts) == 1  # a tiny nucleus keeps only the most likely token
    wide = make_generator(max_new_tokens=1, top_p=0.999)
    generate(wide, props(8), ctx)
    assert len({tuple(wide.rollout(p.id)["completion_ids"]) for p in props(8)}) > 1


def test_chat_template_required_or_plain(tmp_path: Path, make_ctx: Any, short_prompt: dict[str, str]) -> None:
    from tiny import build_tiny_model

    bare = build_tiny_model(tmp_path / "bare", chat_template=None)
    gen = HFGenerator(model_path=str(bare), device="cpu", max_new_tokens=2, extract="raw", **short_prompt)
    with pytest.raises(RecipeError, match="no chat template"):
        generate(gen, props(1), make_ctx())
    plain = HFGenerator(model_path=str(bare), device="cpu", max_new_tokens=2, extract="raw", chat_template="plain",
                        **short_prompt)
    (g,) = generate(plain, props(1), make_ctx())
    assert g.tokens_in > 0
    assert plain.policy.render([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]) == "a\n\nb\n\n"


def test_train_step_moves_probability_towards_a_positive_advantage(make_generator: Any, make_ctx: Any) -> None:
    """The text batch format: prompts (chat messages), completions and advantages."""
    gen = make_generator()
    policy = gen.policy
    messages = [{"role": "system", "content": "a"}, {"role": "user", "content": "relu"}]
    prompt_ids = policy.encode(policy.render(messages))
    good, bad = "hb", "cd"
    before = {t: policy.sequence_logprob(prompt_ids, policy.encode(t)) for t in (good, bad)}
    for _ in range(3):
        out = gen.train_step({"prompts": [messages, messages], "completions": [good, bad], "advantages": [1.0, -1.0],
                              "lr": 0.05, "clip_eps": 0.2, "track_kl": True})
    after = {t: policy.sequence_logprob(prompt_ids, policy.encode(t)) for t in (good, bad)}
    assert after[good] > before[good] + 0.5 and after[bad] < before[bad] - 0.5
    assert out["adapter_version"] == 3 and gen.adapter_version == 3
    assert out["kl"] > 0 and out["lr"] == 0.05 and out["rollouts"] == 2 and out["tokens"] == 4
    assert math.isfinite(out["loss"]) and out["grad_norm"] > 0


def test_ratio_clip_and_kl_penalty(make_generator: Any) -> None:
    gen = make_generator()
    messages = [{"role": "user", "content": "relu"}]
    batch = {"prompts": [messages] * 4, "completions": ["ab", "cd", "ef", "gh"], "advantages": [1.0, -1.0, 0.5, -0.5]}
    # several optimiser steps on one batch: the later minibatches are off-policy and get clipped
    out = gen.train_step({**batch, "lr": 0.3, "clip_eps": 0.05, "num_minibatches": 4})
    assert out["minibatches"] == 4 and out["clip_fraction"] > 0 and out["kl_old"] > 0
    # a strong KL penalty holds the policy near the base model
    free, tied = make_generator(), make_generator()
    for g, coef in ((free, 0.0), (tied, 20.0)):
        for _ in range(4):
            res = g.train_step({**batch, "lr": 0.05, "kl_coef": coef})
    kl_free = free.train_step({**batch, "lr": 0.0})["kl"]
    kl_tied = tied.train_step({**batch, "lr": 0.0})["kl"]
    assert res["kl"] >= 0 and kl_tied < kl_free / 2


def test_adapters_saved_loaded_and_swapped(make_generator: Any, make_ctx: Any, tmp_path: Path) -> None:
    ctx = make_ctx()
    gen = make_generator(max_new_tokens=4)
    messages = [{"role": "user", "content": "relu"}]
    base_samples = [g.code for g in generate(gen, props(8), ctx)]
    for _ in range(3):
        gen.train_step({"prompts": [messages] * 2, "completions": ["hh", "ab"], "advantages": [1.0, -1.0], "lr": 0.1})
    trained = [g.code for g in generate(gen, props(8), ctx)]
    assert trained != base_samples
    gen.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # swap: sample from the base model, and from the saved adapter loaded under a name
    assert [g.code for g in generate(gen, props(8, adapter="base"), ctx)] == base_samples
    gen.load_adapter(tmp_path / "adapter", "saved")
    swapped = generate(gen, props(8, adapter="saved"), ctx)
    assert [g.code for g in swapped] == trained and swapped[0].meta["adapter"] == "saved"
    assert [g.code for g in generate(gen, props(8), ctx)] == trained  # back on the trainable adapter
    # start a new generator from the saved adapter (the `adapter` option)
    fresh = make_generator(max_new_tokens=4, adapter=str(tmp_path / "adapter"))
    assert [g.code for g in generate(fresh, props(8), ctx)] == trained
    state = fresh.adapter_state()
    assert all(torch.equal(state[k], v) for k, v in gen.adapter_state().items())
    # the swapped adapter is not trained by train_step
    before = {k: v.clone() for k, v in gen.policy.model.state_dict().items() if ".saved." in k}
    gen.train_step({"prompts": [messages], "completions": ["ab"], "advantages": [1.0], "lr": 0.1})
    after = {k: v for k, v in gen.policy.model.state_dict().items() if ".saved." in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_holds_adapter_optimiser_and_version(make_generator: Any, tmp_path: Path) -> None:
    gen = make_generator()
    messages = [{"role": "user", "content": "relu"}]
    batch = {"prompts": [messages] * 2, "completions": ["hh", "ab"], "advantages": [1.0, -1.0], "lr": 0.02}
    gen.train_step(batch)
    gen.train_step(batch)
    gen.save_checkpoint(tmp_path / "ck")
    other = make_generator()
    other.load_checkpoint(tmp_path / "ck")  # before the model is loaded: applied when it is
    assert not other.loaded
    a, b = gen.adapter_state(), other.adapter_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert other.adapter_version == 2
    sa, sb = gen.policy.optimizer.state_dict(), other.policy.optimizer.state_dict()
    assert all(torch.equal(sa["state"][i]["exp_avg"], sb["state"][i]["exp_avg"]) for i in sa["state"])
    # both continue identically
    gen.train_step(batch)
    other.train_step(batch)
    a, b = gen.adapter_state(), other.adapter_state()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_gradient_checkpointing_gives_the_same_update(make_generator: Any) -> None:
    messages = [{"role": "user", "content": "relu"}]
    batch = {"prompts": [messages] * 3, "completions": ["ab", "cd", "hh"], "advantages": [1.0, -0.5, -0.5],
             "lr": 0.01, "kl_coef": 0.1}
    plain, ckpt = make_generator(), make_generator(gradient_checkpointing=True)
    out_p, out_c = plain.train_step(batch), ckpt.train_step(batch)
    assert out_p["loss"] == pytest.approx(out_c["loss"], abs=1e-6)
    a, b = plain.adapter_state(), ckpt.adapter_state()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_kforge_prompt_prints_the_request_without_loading_the_model(make_generator: Any, make_ctx: Any) -> None:
    gen = make_generator(temperature=0.8, top_p=0.95)
    p = props(1)[0]
    prompt = gen.build_prompt(p, make_ctx())
    req = gen.request(p, prompt)
    assert req["messages"] == prompt.messages() and req["seed"] == p.seed
    assert req["sampling"] == {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 2}
    assert not gen.loaded
