"""The ``openai`` generator: the Chat Completions wire format over httpx.

One format serves OpenAI and every compatible server (vLLM, SGLang, Ollama, llama.cpp's server,
LM Studio, hosted providers): set ``base_url`` to the server's ``.../v1``. The proposal's seed is sent
as ``seed``, so servers that honour it sample reproducibly; the cache makes every run replayable
whether they do or not.
"""

from __future__ import annotations

from typing import Any

from kforge.generators.http import Answer, ApiGenerator, api_options
from kforge.hookspecs import hookimpl
from kforge.options import Option


class OpenAIGenerator(ApiGenerator):
    name = "openai"
    description = "a model behind the OpenAI Chat Completions API (OpenAI, vLLM, SGLang, Ollama, llama.cpp, ...)"
    path = "/chat/completions"
    options = (
        *api_options(base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
        Option("send_seed", bool, True, "send each proposal's seed as 'seed' (turn off for servers that reject it)"),
        Option("max_tokens_field", str, "max_tokens", "the request field for the token limit (reasoning models "
               "on OpenAI want max_completion_tokens)", choices=("max_tokens", "max_completion_tokens")),
        Option("send_temperature", bool, True, "send the temperature (some reasoning models reject it)"),
    )

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def wire_seed(self, seed: int) -> int | None:
        return seed % 2**31 if self.opts.send_seed else None

    def payload(self, request: dict[str, Any]) -> dict[str, Any]:
        sampling = request["sampling"]
        body: dict[str, Any] = {"model": request["model"], "messages": request["messages"],
                                str(self.opts.max_tokens_field): sampling["max_tokens"]}
        if self.opts.send_temperature:
            body["temperature"] = sampling["temperature"]
        if "top_p" in sampling:
            body["top_p"] = sampling["top_p"]
        if request.get("seed") is not None:
            body["seed"] = request["seed"]
        body.update(request.get("extra_body") or {})
        return body

    def parse(self, data: dict[str, Any]) -> Answer:
        if not data.get("choices"):
            err = data.get("error")
            detail = err.get("message") if isinstance(err, dict) else err
            raise ValueError(f"no choices in the answer{': ' + str(detail) if detail else ''}")
        choice = data["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, list):  # some servers send content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        usage = data.get("usage") or {}
        finish = choice.get("finish_reason")
        return Answer(text=str(content or ""), tokens_in=int(usage.get("prompt_tokens") or 0),
                      tokens_out=int(usage.get("completion_tokens") or 0), finish_reason=finish,
                      model=data.get("model"), truncated=finish == "length")


@hookimpl
def register_generators(register):
    register(OpenAIGenerator)
