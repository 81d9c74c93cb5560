"""The generation cache: every model answer, keyed by what determines it, so a run replays offline.

The key is a hash of the request that matters for the answer: the generator (wire format), the
model, the messages, the sampling parameters and the seed. The server's address and the API key are
not part of it (the same model behind another address answers the same), and the key is never
written. One JSON file per answer, written atomically, so a crash never leaves half an entry and two
runs can share a folder.

Each answer is also reachable through a device-neutral alias (the same request with the prompt's
device section blanked): a replay on another machine (a laptop replaying a run made on an H100)
builds a prompt that differs only in the device line, and still finds its answers. Only
``replay_only`` uses the aliases; a live run never gets an answer to a different prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_VERSION = 1


def cache_key(request: dict[str, Any]) -> str:
    """A stable hash of a request (JSON with sorted keys)."""
    text = json.dumps({"v": CACHE_VERSION, **request}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class GenerationCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, key: str, record: dict[str, Any], aliases: tuple[str, ...] = ()) -> Path:
        """Store a record; each alias key is written as a pointer to it."""
        target = self.path(key)
        _write_json(target, {**record, "key": key})
        for alias in aliases:
            _write_json(self.folder / "aliases" / f"{alias}.json", {"alias": alias, "key": key})
        return target

    def get_alias(self, alias: str) -> dict[str, Any] | None:
        """The record an alias points to (the newest written, if several records share it)."""
        try:
            pointer = json.loads((self.folder / "aliases" / f"{alias}.json").read_text())
        except (OSError, ValueError):
            return None
        return self.get(str(pointer.get("key"))) if isinstance(pointer, dict) else None

    def __len__(self) -> int:
        return sum(1 for p in self.folder.glob("*/*.json") if p.parent.name != "aliases") \
            if self.folder.is_dir() else 0


def _write_json(target: Path, data: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
