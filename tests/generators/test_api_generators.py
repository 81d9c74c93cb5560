"""The openai and anthropic generators against a real HTTP server on loopback (no mocked client)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from generator_helpers import KEY_ENV, SECRET
from loopback import LoopbackServer, Reply, Seen, answer, fault, malformed

from kforge.api import Generation, Proposal
from kforge.generators.http import AuthError, GeneratorError, ReplayMiss, parse_retry_after

WIRES = ["openai", "anthropic"]
GOOD = """Here is a fast kernel.

```python
import torch
import triton
import triton.language as tl


@triton.jit
def k(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=offs < n), 0), mask=offs < n)


class ModelNew(torch.nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        k[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
```
"""


def proposal(k: int = 0, problem: str = "relu", **params: Any) -> Proposal:
    return Proposal(id=f"{problem}:s{k}", problem_id=problem, step=k, seed=1000 + k, params={"sample": k, **params})


def run(gen: Any, proposals: list[Proposal], ctx: Any) -> list[Generation]:
    async def go() -> list[Generation]:
        try:
            return await gen.generate(proposals, ctx)
        finally:
            await gen.aclose()

    return asyncio.run(go())


def path_of(wire: str) -> str:
    return "/v1/chat/completions" if wire == "openai" else "/v1/messages"


@pytest.mark.parametrize("wire", WIRES)
def test_answer_becomes_a_generation_with_tokens_and_cost(wire: str, server: LoopbackServer, make_generator: Any,
                                                         ctx: Any) -> None:
    server.push(answer(GOOD, tokens_in=1200, tokens_out=800))
    gen = make_generator(wire, temperature=0.3, max_tokens=4096)
    [g] = run(gen, [proposal(0)], ctx)
    assert g.error is None and g.code is not None and "class ModelNew" in g.code
    assert (g.tokens_in, g.tokens_out) == (1200, 800)
    assert g.cost_usd == pytest.approx(1200 * 3.0 / 1e6 + 800 * 15.0 / 1e6)
    assert g.model == "loopback-coder" and g.generator == wire and g.meta["attempts"] == 1
    [req] = server.requests(path_of(wire))
    body = req.body
    assert body["model"] == "loopback-coder" and body["max_tokens"] == 4096 and body["temperature"] == 0.3
    if wire == "openai":
        assert req.headers["authorization"] == f"Bearer {SECRET}"
        assert body["seed"] == 1000 and [m["role"] for m in body["messages"]] == ["system", "user"]
    else:
        assert req.headers["x-api-key"] == SECRET and req.headers["anthropic-version"] == "2023-06-01"
        assert "seed" not in body and body["system"] and [m["role"] for m in body["messages"]] == ["user"]
    assert "relu" in str(body["messages"])
    assert gen.usage_summary()["cost_usd"] == pytest.approx(g.cost_usd)


@pytest.mark.parametrize("wire", WIRES)
def test_429_retry_after_is_honoured(wire: str, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(fault(429, retry_after="1"), answer(GOOD))
    [g] = run(make_generator(wire, backoff_s=0.01), [proposal()], ctx)
    first, second = server.requests()
    assert g.code is not None and g.meta["attempts"] == 2
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"
    assert g.meta["retry_waits_s"][0] >= 1.0


def test_retry_after_ms_and_http_date_are_understood() -> None:
    import email.utils

    import httpx

    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == pytest.approx(0.25)
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=1_000_000) == pytest.approx(30, abs=1)
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


@pytest.mark.parametrize("wire", WIRES)
def test_5xx_are_retried_with_backoff(wire: str, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(fault(500), fault(503), answer(GOOD))
    [g] = run(make_generator(wire, backoff_s=0.05), [proposal()], ctx)
    assert g.code is not None and g.meta["attempts"] == 3 and len(server.requests()) == 3
    waits = g.meta["retry_waits_s"]
    # full jitter between half and all of backoff_s * 2**(n-1)
    assert 0.025 <= waits[0] <= 0.05 and 0.05 <= waits[1] <= 0.1


@pytest.mark.parametrize("wire", WIRES)
def test_retries_run_out_into_a_generation_error(wire: str, server: LoopbackServer, make_generator: Any,
                                                 ctx: Any) -> None:
    server.push(*[fault(502)] * 10)
    gen = make_generator(wire, max_retries=2)
    [g] = run(gen, [proposal()], ctx)
    assert g.code is None and "gave up after 3 attempts" in (g.error or "") and "HTTP 502" in (g.error or "")
    assert len(server.requests()) == 3
    assert gen.usage_summary()["failed"] == 1 and g.cost_usd == 0


@pytest.mark.parametrize("wire", WIRES)
def test_a_slow_answer_times_out_and_is_retried(wire: str, server: LoopbackServer, make_generator: Any,
                                                ctx: Any) -> None:
    server.push(answer(GOOD, delay=1.5), answer(GOOD))
    [g] = run(make_generator(wire, timeout_s=0.3), [proposal()], ctx)
    assert g.code is not None and g.meta["attempts"] == 2 and len(server.requests()) == 2


@pytest.mark.parametrize("wire", WIRES)
def test_malformed_json_is_retried(wire: str, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(malformed(), answer(GOOD))
    [g] = run(make_generator(wire), [proposal()], ctx)
    assert g.code is not None and g.meta["attempts"] == 2


def test_malformed_json_every_time_is_reported(server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(*[malformed()] * 5)
    [g] = run(make_generator(max_retries=1), [proposal()], ctx)
    assert g.code is None and "not valid JSON" in (g.error or "")


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_is_one_clear_error_naming_the_variable_never_the_key(
        wire: str, status: int, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    # Real servers echo (part of) the key back: the error must not carry it.
    server.push(fault(status, body={"error": {"message": f"Incorrect API key provided: {SECRET}"}}))
    with pytest.raises(AuthError) as info:
        run(make_generator(wire), [proposal()], ctx)
    message = str(info.value)
    assert KEY_ENV in message and f"HTTP {status}" in message and SECRET not in message
    assert SECRET not in repr(info.value) and len(server.requests()) == 1, "a bad key must not be retried"


@pytest.mark.parametrize("wire", WIRES)
def test_other_4xx_are_not_retried_and_scrubbed_of_the_key(wire: str, server: LoopbackServer,
                                                           make_generator: Any, ctx: Any) -> None:
    server.push(fault(400, body={"error": {"message": f"context too long (key {SECRET})"}}))
    [g] = run(make_generator(wire), [proposal()], ctx)
    assert g.code is None and "HTTP 400" in (g.error or "") and "context too long" in (g.error or "")
    assert SECRET not in (g.error or "") and len(server.requests()) == 1


def test_404_names_base_url_and_model(server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    gen = make_generator(base_url=server.url + "/wrong")
    with pytest.raises(GeneratorError) as info:
        run(gen, [proposal()], ctx)
    assert "base_url" in str(info.value) and "loopback-coder" in str(info.value)


def test_missing_key_variable_is_a_clear_error(make_generator: Any, ctx: Any, monkeypatch: pytest.MonkeyPatch,
                                              server: LoopbackServer) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(GeneratorError, match=KEY_ENV):
        run(make_generator(), [proposal()], ctx)
    assert server.requests() == []


def test_a_server_without_keys_gets_no_auth_header(make_generator: Any, ctx: Any, server: LoopbackServer) -> None:
    server.push(answer(GOOD))
    [g] = run(make_generator(api_key_env=""), [proposal()], ctx)
    assert g.code is not None and "authorization" not in server.requests()[0].headers


def test_connection_errors_are_retried(make_generator: Any, ctx: Any, server: LoopbackServer) -> None:
    url = server.url
    server.stop()
    [g] = run(make_generator(base_url=url + "/v1", max_retries=2), [proposal()], ctx)
    assert g.code is None and "connection error" in (g.error or "") and "3 attempts" in (g.error or "")


@pytest.mark.parametrize("wire", WIRES)
def test_answer_without_code(wire: str, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(answer("I would use a Triton kernel with a 1024-wide block and masks.", tokens_out=20))
    gen = make_generator(wire)
    [g] = run(gen, [proposal()], ctx)
    assert g.code is None and "no code" in (g.error or "") and g.meta["extraction"] == "none"
    assert g.tokens_out == 20 and g.cost_usd > 0, "an answer without code still costs its tokens"


@pytest.mark.parametrize("wire", WIRES)
def test_answer_with_three_blocks_takes_the_one_defining_modelnew(wire: str, server: LoopbackServer,
                                                                  make_generator: Any, ctx: Any) -> None:
    text = ("First the kernel idea:\n```python\n@triton.jit\ndef helper(x):\n    pass\n```\n"
            "Then the module:\n" + GOOD.split("\n", 1)[1] + "\nAnd a test:\n```python\nprint(ModelNew()(x))\n```\n")
    server.push(answer(text))
    [g] = run(make_generator(wire), [proposal()], ctx)
    assert g.code is not None and g.code.count("class ModelNew") == 1 and "print(" not in g.code
    assert "def k(" in g.code


@pytest.mark.parametrize("wire", WIRES)
def test_truncated_block(wire: str, server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    cut = GOOD[: GOOD.index("        y = torch.empty_like")]
    server.push(answer(cut + "        y = torch.emp", finish="length"))
    [g] = run(make_generator(wire), [proposal()], ctx)
    assert g.code is None and "cut off" in (g.error or "") and "max_tokens" in (g.error or "")
    assert g.meta["finish_reason"] in ("length", "max_tokens")


def test_concurrency_limit(server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.responder = lambda seen: answer(GOOD, delay=0.15)
    gens = run(make_generator(concurrency=2), [proposal(k) for k in range(6)], ctx)
    assert all(g.code is not None for g in gens) and len(server.requests()) == 6
    assert server.max_in_flight == 2


def test_proposal_temperature_and_extra_body_reach_the_server(server: LoopbackServer, make_generator: Any,
                                                              ctx: Any) -> None:
    server.push(answer(GOOD))
    run(make_generator(extra_body={"top_k": 20}, max_tokens_field="max_completion_tokens"),
        [proposal(temperature=1.1)], ctx)
    body = server.requests()[0].body
    assert body["temperature"] == 1.1 and body["top_k"] == 20 and body["max_completion_tokens"] == 8192
    assert "max_tokens" not in body


def _essential(g: Generation) -> dict[str, Any]:
    data = dataclasses.asdict(g)
    data["meta"] = {k: v for k, v in g.meta.items() if k not in ("cached", "cache_match", "attempts", "latency_s",
                                                            "retry_waits_s")}
    return data


@pytest.mark.parametrize("wire", WIRES)
def test_cache_replays_offline_with_identical_generations(wire: str, server: LoopbackServer, make_generator: Any,
                                                          ctx: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {0: GOOD, 1: "no code here", 2: GOOD.replace("1024", "2048")}

    def respond(seen: Seen) -> Reply:
        return answer(texts[len(server.requests()) % 3], tokens_in=500 + len(server.requests()))

    server.responder = respond
    proposals = [proposal(k) for k in range(3)] + [proposal(0, problem="softmax")]
    first = run(make_generator(wire, concurrency=1), proposals, ctx)
    assert len(server.requests()) == 4 and all(not g.meta["cached"] for g in first)
    server.stop()
    monkeypatch.delenv(KEY_ENV)  # no key and no server: only the cache can answer
    replayed = run(make_generator(wire, replay_only=True), proposals, ctx)
    assert [_essential(g) for g in replayed] == [_essential(g) for g in first]
    assert all(g.meta["cached"] for g in replayed)
    assert all(g.meta["cache_match"] == "exact" for g in replayed)
    files = list((tmp_path / "cache").rglob("*.json"))
    assert SECRET not in "".join(p.read_text() for p in files)
    assert len([f for f in files if f.parent.name != "aliases"]) == 4


def test_replay_on_another_machine_matches_without_the_device_line(
        server: LoopbackServer, make_generator: Any, ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run made on an H100 replays on a laptop: the prompts differ only in the device section."""
    server.responder = lambda seen: answer(GOOD.replace("1024", str(seen.body["seed"] % 997 + 1)))
    ctx.device = {"device": "NVIDIA H100 80GB HBM3", "device_kind": "cuda", "sm": "90", "sm_count": 132}
    proposals = [proposal(k) for k in range(3)]
    first = run(make_generator(), proposals, ctx)
    server.stop()
    monkeypatch.delenv(KEY_ENV)
    ctx.device = {"device": "CPU (x86_64, 2 cores)", "device_kind": "cpu"}
    replayed = run(make_generator(replay_only=True), proposals, ctx)
    assert [g.code for g in replayed] == [g.code for g in first] and len({g.code for g in first}) == 3
    assert all(g.meta["cache_match"] == "device-neutral" for g in replayed)
    assert [g.meta["prompt_hash"] for g in replayed] != [g.meta["prompt_hash"] for g in first]


def test_a_live_run_never_takes_an_answer_to_another_prompt(server: LoopbackServer, make_generator: Any,
                                                            ctx: Any) -> None:
    server.responder = lambda seen: answer(GOOD)
    ctx.device = {"device": "NVIDIA H100 80GB HBM3", "device_kind": "cuda"}
    run(make_generator(), [proposal()], ctx)
    ctx.device = {"device": "NVIDIA A100-SXM4-80GB", "device_kind": "cuda"}
    [g] = run(make_generator(), [proposal()], ctx)
    assert not g.meta["cached"] and len(server.requests()) == 2


def test_replay_miss_is_a_clear_error(make_generator: Any, ctx: Any, server: LoopbackServer) -> None:
    with pytest.raises(ReplayMiss, match="replay_only"):
        run(make_generator(replay_only=True), [proposal()], ctx)
    assert server.requests() == []


def test_cache_key_depends_on_seed_model_and_sampling(server: LoopbackServer, make_generator: Any,
                                                      ctx: Any) -> None:
    server.responder = lambda seen: answer(GOOD)
    keys = set()
    cases: list[tuple[dict[str, Any], Proposal]] = [
        ({}, proposal(0)), ({}, proposal(1)), ({"model": "other"}, proposal(0)), ({"temperature": 0.1}, proposal(0)),
        ({}, proposal(0))]
    for opts, prop in cases:
        [g] = run(make_generator(**opts), [prop], ctx)
        keys.add(g.meta["cache_key"])
    assert len(keys) == 4 and len(server.requests()) == 4, "the repeated request must be served from the cache"


def test_default_cache_is_in_the_run_directory(server: LoopbackServer, make_generator: Any, ctx: Any) -> None:
    server.push(answer(GOOD))
    run(make_generator(cache=None), [proposal()], ctx)
    assert len(list((Path(ctx.run_dir) / "generations").glob("??/*.json"))) == 1


def test_refinement_applies_search_replace_to_the_parent(server: LoopbackServer, make_generator: Any,
                                                         ctx: Any) -> None:
    parent = GOOD.split("```python\n", 1)[1].split("```")[0]
    edit = ("<<<<<<< SEARCH\n        k[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)\n=======\n"
            "        k[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)\n>>>>>>> REPLACE\n")
    bad = "<<<<<<< SEARCH\n    return torch.relu(x)\n=======\n    return x\n>>>>>>> REPLACE\n"
    server.push(answer(edit), answer(bad))
    feedback = {"status": "correct", "speedup": 0.8, "time_ms": 1.25, "baseline_ms": 1.0}
    good, failed = run(make_generator(edit_format="diff", concurrency=1),
                       [proposal(0, parent_code=parent, feedback=feedback),
                        proposal(1, parent_code=parent, feedback=feedback)], ctx)
    assert good.code is not None and "BLOCK=4096" in good.code and good.label.endswith("edit")
    assert failed.code is None and "edit 1 of 1 did not apply" in (failed.error or "")
    assert failed.meta["edit_failures"]
    user = server.requests()[0].body["messages"][1]["content"]
    assert "<<<<<<< SEARCH" in user and "speedup over PyTorch eager: 0.8x" in user and parent.strip() in user
