"""Start ``kforge run RECIPE --json`` in its own process and find its run directory.

The run does not depend on the dashboard: its output goes to files (not a pipe), it runs in its own
session (a Ctrl-C in the dashboard's terminal does not reach it), and it keeps going if the dashboard
quits. The dashboard attaches to it through the store, like to any other run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LaunchError(Exception):
    """The run could not start (bad recipe, bad override, failed judge): the message says why."""


class LaunchedRun:
    def __init__(self, recipe: str | Path, overrides: Sequence[str] = (), extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self.recipe = Path(recipe)
        self.args = [sys.executable, "-m", "kforge", "run", str(self.recipe), "--json"]
        for o in overrides:
            self.args += ["--set", o]
        self.args += list(extra_args)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_dir = Path(tempfile.mkdtemp(prefix="kforge-tui-"))
        self.stdout_path = self.log_dir / "events.jsonl"
        self.stderr_path = self.log_dir / "stderr.log"
        self.run_dir: Path | None = None

    def start(self) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def wait_for_run_dir(self, timeout: float = 600.0, cancelled: Callable[[], bool] = lambda: False,
                         interval: float = 0.05) -> Path | None:
        """Read the run's first JSON line (``run_started``) for its run directory.

        Returns None if cancelled; raises LaunchError if the process ends first or the timeout passes."""
        deadline = time.monotonic() + timeout
        offset = 0
        buf = b""
        while time.monotonic() < deadline:
            if cancelled():
                return None
            try:
                with open(self.stdout_path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except OSError:
                chunk = b""
            offset += len(chunk)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == "run_started":
                    self.run_dir = Path(event["run_dir"])
                    if not self.run_dir.is_absolute() and self.cwd is not None:
                        self.run_dir = Path(self.cwd) / self.run_dir
                    return self.run_dir
            code = self.returncode()
            if code is not None and not chunk:
                raise LaunchError(f"kforge run {self.recipe} exited with code {code} before it started"
                                  + (f":\n{self.stderr_tail()}" if self.stderr_tail() else ""))
            time.sleep(interval)
        raise LaunchError(f"kforge run {self.recipe} did not start within {timeout:.0f} s")

    def stop(self) -> None:
        """Ask the run to stop cleanly (its first Ctrl-C): it finishes what is in flight and writes the summary."""
        if self.running() and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.running() and self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
