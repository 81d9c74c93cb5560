"""The ``anthropic`` generator: Anthropic's Messages API over httpx.

The system prompt goes in ``system``, the user prompt as the one user message. The API takes no
seed; the proposal's seed is still part of the cache key, so every sample is cached on its own and a
run replays candidate for candidate.
"""

from __future__ import annotations

from typing import Any

from kforge.generators.http import Answer, ApiGenerator, api_options
from kforge.hookspecs import hookimpl
from kforge.options import Option


class AnthropicGenerator(ApiGenerator):
    name = "anthropic"
    description = "a Claude model behind Anthropic's Messages API"
    path = "/v1/messages"
    options = (
        *api_options(base_url="https://api.anthropic.com", api_key_env="ANTHROPIC_API_KEY"),
        Option("anthropic_version", str, "2023-06-01", "the anthropic-version header"),
    )

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json",
                   "anthropic-version": str(self.opts.anthropic_version)}
        if key:
            headers["x-api-key"] = key
        return headers

    def payload(self, request: dict[str, Any]) -> dict[str, Any]:
        sampling = request["sampling"]
        system = "\n\n".join(m["content"] for m in request["messages"] if m["role"] == "system")
        body: dict[str, Any] = {
            "model": request["model"], "max_tokens": sampling["max_tokens"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in request["messages"]
                         if m["role"] != "system"],
            "temperature": min(1.0, sampling["temperature"]),
        }
        if system:
            body["system"] = system
        if "top_p" in sampling:
            body["top_p"] = sampling["top_p"]
        body.update(request.get("extra_body") or {})
        return body

    def parse(self, data: dict[str, Any]) -> Answer:
        if data.get("type") == "error" or "content" not in data:
            err = data.get("error")
            detail = err.get("message") if isinstance(err, dict) else err
            raise ValueError(f"no content in the answer{': ' + str(detail) if detail else ''}")
        text = "".join(block.get("text", "") for block in data["content"]
                       if isinstance(block, dict) and block.get("type") == "text")
        usage = data.get("usage") or {}
        tokens_in = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens",
                                                          "cache_read_input_tokens"))
        stop = data.get("stop_reason")
        return Answer(text=text, tokens_in=tokens_in, tokens_out=int(usage.get("output_tokens") or 0),
                      finish_reason=stop, model=data.get("model"), truncated=stop == "max_tokens")


@hookimpl
def register_generators(register):
    register(AnthropicGenerator)
