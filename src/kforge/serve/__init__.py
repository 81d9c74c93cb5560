"""``kforge serve``: an HTTP JSON service over :class:`kforge.evaluator.Evaluator` (see docs/service.md).

Needs aiohttp (``pip install 'kforge[serve]'``); nothing here is imported by ``kforge --help``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from kforge.options import RecipeError


def run_server(*, host: str, port: int, db: Path, tokens: list[str], evaluator_kwargs: dict[str, Any],
               limits: Any, as_json: bool = False) -> int:
    """Start the judges, then serve until SIGINT/SIGTERM. Returns the exit code."""
    try:
        from aiohttp import web
    except ImportError as exc:
        raise RecipeError("kforge serve needs aiohttp: pip install 'kforge[serve]'") from exc
    from kforge.evaluator import Evaluator
    from kforge.serve.app import Service, is_loopback
    from kforge.serve.queue import JobQueue

    if not tokens and not is_loopback(host):
        raise RecipeError(f"--host {host} is reachable from other machines: give a bearer token with --token "
                          "(or KFORGE_SERVE_TOKEN), or bind to 127.0.0.1")
    evaluator = Evaluator(**evaluator_kwargs)
    queue = JobQueue(db)
    print(f"kforge serve: starting the judges ({evaluator.executor.name})...", file=sys.stderr, flush=True)
    evaluator.start()
    try:
        return asyncio.run(_serve(Service(evaluator, queue, tokens, limits), host, port, as_json, web))
    finally:
        evaluator.close()
        queue.close()


async def _serve(service: Any, host: str, port: int, as_json: bool, web: Any) -> int:
    runner = web.AppRunner(service.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"Error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    bound = runner.addresses[0] if runner.addresses else (host, port)
    url_host = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    url = f"http://{url_host}:{bound[1]}"
    info = service.health_data()
    if as_json:
        print(json.dumps({"event": "listening", "url": url, "device": info["device"],
                          "recovered": info["recovered_at_start"], "queued": info["queue_depth"]}), flush=True)
    print(f"kforge serve: listening on {url} ({info['device']}; {info['queue_depth']} queued, "
          f"{info['recovered_at_start']} recovered from a previous run). Docs: docs/service.md", file=sys.stderr,
          flush=True)
    stop = asyncio.Event()
    got: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    print("kforge serve: stopping (running jobs go back to the queue)", file=sys.stderr, flush=True)
    await runner.cleanup()
    return 130 if got and got[0] == signal.SIGINT else 0
