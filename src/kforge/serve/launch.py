"""Start ``kforge serve`` as a child process and wait until it listens (for scripts, benchmarks, tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class ServerProcess:
    """``with ServerProcess(["--device", "cpu"], db=path) as server: Client(server.url)``.

    The server runs in its own process group, so :meth:`kill` can take its judges down with it."""

    def __init__(self, args: list[str] | None = None, *, db: str | Path, env: dict[str, str] | None = None,
                 start_timeout: float = 180.0) -> None:
        self.args, self.db, self.env, self.start_timeout = list(args or []), Path(db), env, start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr: list[str] = []

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "kforge", "serve", "--port", "0", "--db", str(self.db), "--json", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env if self.env is not None else dict(os.environ),
                                     start_new_session=True)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "listening":
                self.url = msg["url"]
                self.info: dict[str, Any] = msg
                return self
        self.kill()
        raise RuntimeError("kforge serve did not start:\n" + "".join(self.stderr[-40:]))

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait; the judges stop with the server."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the server and everything in its process group (its judges and sandboxes)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.kill()  # anything of its group left behind
