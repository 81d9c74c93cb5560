"""A real HTTP server on 127.0.0.1 that speaks both wire formats, with scripted answers and faults.

``POST /v1/chat/completions`` answers in OpenAI's Chat Completions format and ``POST /v1/messages``
in Anthropic's Messages format. Each request takes the next scripted :class:`Reply` (or, when the
script is empty, whatever ``responder`` returns for it); a Reply is either an answer (text and
usage, rendered in the format of the path asked) or a fault (a status, headers, a raw body, a delay).
Every request is recorded with its arrival time, headers and JSON body, so tests can count
retries and measure the gaps between them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str | None = None  # an answer's text
    tokens_in: int = 100
    tokens_out: int = 50
    finish: str = "stop"  # OpenAI finish_reason; "length" becomes Anthropic's "max_tokens"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body sent as is (malformed JSON, error bodies)
    delay: float = 0.0  # seconds before answering
    model: str | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival


def answer(text: str, **kw: Any) -> Reply:
    return Reply(text=text, **kw)


def fault(status: int, *, retry_after: str | None = None, body: Any = None, delay: float = 0.0,
          headers: dict[str, str] | None = None) -> Reply:
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = retry_after
    raw = json.dumps(body if body is not None else {"error": {"message": f"scripted fault {status}"}}).encode()
    return Reply(status=status, headers=hdrs, raw=raw, delay=delay)


def malformed() -> Reply:
    return Reply(raw=b'{"choices": [{"message": {"content": "unterminated', status=200)


def render(path: str, reply: Reply, body: Any) -> bytes:
    model = reply.model or (body.get("model") if isinstance(body, dict) else None) or "loopback-model"
    if path.endswith("/messages"):
        stop = {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish, reply.finish)
        return json.dumps({
            "id": "msg_loopback", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply.text}], "stop_reason": stop,
            "usage": {"input_tokens": reply.tokens_in, "output_tokens": reply.tokens_out}}).encode()
    return json.dumps({
        "id": "chatcmpl-loopback", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                     "finish_reason": reply.finish}],
        "usage": {"prompt_tokens": reply.tokens_in, "completion_tokens": reply.tokens_out,
                  "total_tokens": reply.tokens_in + reply.tokens_out}}).encode()


class LoopbackServer:
    PATHS = ("/v1/chat/completions", "/v1/messages")

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.responder: Callable[[Seen], Reply] | None = None
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def requests(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def next_reply(self, seen: Seen) -> Reply:
        with self.lock:
            if self.script:
                return self.script.popleft()
        if self.responder is not None:
            return self.responder(seen)
        return fault(500, body={"error": {"message": "the loopback script is empty"}})

    def start(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with server.lock:
                    server.seen.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path not in server.PATHS:
                        reply = fault(404, body={"error": {"message": f"no route {self.path}"}})
                    else:
                        reply = server.next_reply(seen)
                    if reply.delay:
                        time.sleep(reply.delay)
                    payload = reply.raw if reply.raw is not None else render(self.path, reply, body)
                    try:
                        self.send_response(reply.status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        for k, v in reply.headers.items():
                            self.send_header(k, v)
                        self.end_headers()
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (a timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@contextmanager
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    try:
        yield server
    finally:
        server.stop()
