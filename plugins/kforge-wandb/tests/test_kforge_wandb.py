"""Tests for kforge-wandb, with W&B in offline mode (WANDB_MODE=offline: no network, no account).

What was logged is read back from the offline run's transaction log (``run-<id>.wandb``, records in
LevelDB's log format holding W&B's protobuf ``Record`` messages). Needs the plugin installed:
``pip install -e plugins/kforge-wandb``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

wandb = pytest.importorskip("wandb")
kforge_wandb = pytest.importorskip("kforge_wandb")

from kforge.plugins import build_registry  # noqa: E402

DATA = Path(__file__).parent / "data" / "quickstart_events.jsonl"
REPO = Path(__file__).resolve().parents[3]
DIST = "kforge-wandb"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """W&B offline, with its config, cache and data folders in tmp_path (nothing in the home folder)."""
    env = {"WANDB_MODE": "offline", "WANDB_PROJECT": "kforge-tests", "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp_path / "wb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wb-data"), "WANDB_DISABLE_GIT": "true",
           "WANDB_DISABLE_CODE": "true"}
    for key in ("WANDB_API_KEY", "WANDB_ENTITY", "KFORGE_WANDB"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def records(run_dir: Path) -> Iterator[Any]:
    """Every protobuf Record of the offline W&B run under ``run_dir/wandb``."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = log.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        if kind in (1, 4):  # full, last
            record = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        else:  # first, middle
            pending += chunk


def _put(row: dict[str, Any], item: Any) -> None:
    """A logged value into ``row``; a media value (a table) arrives as one item per field, nested."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        row = row.setdefault(part, {})
    row[path[-1]] = json.loads(item.value_json)


def history(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for r in records(run_dir):
        if r.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            for item in r.history.item:
                _put(row, item)
            rows.append(row)
    return rows


def summary(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in records(run_dir):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                _put(out, item)
    return out


def log_run(run_dir: Path, evs: list[dict[str, Any]]) -> Any:
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = kforge_wandb.WandbLogger()
    logger.setup(run_dir, {"run": {"name": "quickstart"}, "budget": {"candidates": 20}})
    for e in evs:
        logger.log(e)
    logger.close()
    return logger


def test_switches() -> None:
    assert not kforge_wandb.enabled({})
    assert kforge_wandb.enabled({"WANDB_PROJECT": "p"})
    assert kforge_wandb.enabled({"KFORGE_WANDB": "1"})
    assert not kforge_wandb.enabled({"WANDB_PROJECT": "p", "KFORGE_WANDB": "0"})


def test_run_id_is_stable_and_valid(tmp_path: Path) -> None:
    rid = kforge_wandb.run_id(tmp_path / "Quickstart_20261125-104709")
    assert rid == kforge_wandb.run_id(tmp_path / "Quickstart_20261125-104709")
    assert rid != kforge_wandb.run_id(tmp_path / "other")
    assert rid.startswith("quickstart-20261125-104709-") and all(c.isalnum() or c == "-" for c in rid)


def test_the_entry_point_registers_the_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", DIST)
    reg = build_registry()
    assert reg.get("loggers", "wandb") is kforge_wandb.WandbLogger
    assert reg.items["loggers"]["wandb"].plugin == DIST
    assert reg.get("loggers", "jsonl")  # the built-in JSONL logger is still there


def test_a_real_runs_events_logged_offline(tmp_path: Path, offline: dict[str, str]) -> None:
    run_dir = tmp_path / "quickstart-20261125-104709"
    evs = events()
    logger = log_run(run_dir, evs)
    assert logger.run is None  # finished
    rows = history(run_dir)
    results = [e for e in evs if e["event"] == "result"]
    assert max(r.get("results", 0) for r in rows) == len(results) == 9
    # best-so-far curves: one point per improvement, as the run's best_improved events say
    improved = [e for e in evs if e["event"] == "best_improved"]
    logged = [(k.split("/", 1)[1], v) for r in rows for k, v in r.items() if k.startswith("best_speedup/")]
    assert logged == [(e["problem"], pytest.approx(e["speedup"])) for e in improved]
    last = [r for r in rows if "correct_rate" in r][-1]
    assert last["correct"] == 4 and last["correct_rate"] == pytest.approx(4 / 9)
    (table_row,) = [r for r in rows if "final_table" in r]
    assert table_row["final_table"]["_type"] == "table-file"
    (table_file,) = run_dir.glob("wandb/offline-run-*/files/media/table/final_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["problem", "best_speedup", "best_candidate", "status", "tried", "correct"]
    assert [r[0] for r in table["data"]] == ["relu", "softmax", "layernorm"]
    assert [r[4:] for r in table["data"]] == [[5, 1], [2, 1], [2, 2]]
    s = summary(run_dir)
    end = [e for e in evs if e["event"] == "summary"][0]
    assert s["fast_p/0"] == end["fast_p"]["0"] == 1.0
    assert s["geomean_speedup"] == pytest.approx(end["geomean_speedup"])
    assert s["problems_solved"] == 3
    keys = set()
    for r in records(run_dir):  # the recipe comes with the run record, later keys as config updates
        kind = r.WhichOneof("record_type")
        if kind == "run":
            keys |= {i.key for i in r.run.config.update}
        elif kind == "config":
            keys |= {i.key for i in r.config.update}
    assert {"run", "budget", "kforge_version", "run_dir"} <= keys


def test_off_unless_asked(tmp_path: Path, offline: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFORGE_WANDB", "0")
    log_run(tmp_path / "r", events())
    assert not (tmp_path / "r" / "wandb").exists()


def test_a_w_and_b_failure_never_stops_the_run(tmp_path: Path, offline: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(**_kwargs: Any) -> None:
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    logger = log_run(tmp_path / "r", events())
    assert logger.run is None
    assert "could not start a W&B run (UsageError: api_key not configured" in capsys.readouterr().err


@pytest.mark.slow
def test_a_kforge_run_logs_through_the_hook(tmp_path: Path, offline: dict[str, str]) -> None:
    """A real ``kforge run`` (one candidate) with only this plugin loaded: the W&B run sits in the run dir."""
    cands = tmp_path / "candidates" / "relu"
    cands.mkdir(parents=True)
    (cands / "correct.py").write_text((REPO / "recipes/quickstart/candidates/relu/correct.py").read_text())
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[run]\nname = "tiny"\n[problems]\nids = ["relu"]\nshapes = "small"\n'
                      '[generator]\nname = "replay"\npath = "candidates"\n'
                      '[search]\nname = "best-of-n"\nn = 1\n'
                      "[eval]\nmin_samples = 3\nmax_samples = 5\nmax_timing_s = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFORGE_")}
    env.update(offline, KFORGE_LOAD_PLUGINS=DIST)
    proc = subprocess.run([sys.executable, "-m", "kforge", "run", str(recipe), "--json", "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = history(tmp_path / "run")
    assert any("best_speedup/relu" in r for r in rows)
    assert any("final_table" in r for r in rows)
    assert summary(tmp_path / "run")["problems_solved"] == 1
