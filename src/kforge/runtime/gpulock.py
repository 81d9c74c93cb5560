"""The judges' per-GPU lock file, taken with ``flock``: shared for GPU work that may overlap (correctness,
checks, a sandbox starting its CUDA context), exclusive for timing.

``flock`` alone grants a new shared request while an exclusive one waits, so a stream of overlapping
shared holders (two judges' correctness work, their spare sandboxes starting one after another) can
keep a timing judge waiting for seconds. A second file, the gate (``<lock>.gate``), gives timing
precedence: an exclusive taker holds the gate while it waits for the lock; a shared taker passes
through the gate (taken shared, released once it has the lock), so it queues behind any timing judge
already waiting. Standard library only: the sandbox takes it before importing anything of the candidate's.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def open_lock(path: str | Path) -> tuple[int, int]:
    """Descriptors of the lock file and of its gate (created if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    gate = os.open(f"{path}.gate", os.O_RDWR | os.O_CREAT, 0o666)
    return fd, gate


def acquire(fd: int, gate: int, exclusive: bool) -> None:
    fcntl.flock(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)


def release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
