"""Live tests against Modal's service: skipped unless ``KFORGE_TEST_MODAL=1`` (credentials and network
needed; they spend a few cents). They have never run on the machines kforge is developed on, which
cannot reach Modal. Run them with::

    KFORGE_TEST_MODAL=1 pytest -m modal tests/executors/test_modal_live.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.modal
REPO = Path(__file__).resolve().parents[2]


def test_check_image_builds_and_judges_known_good_candidates(kforge_cli, tmp_path: Path) -> None:
    proc = kforge_cli("modal", "check", "--image", "--json", "--log-dir", tmp_path, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {c["backend"]: c["status"] for c in report["image"]["candidates"]} == {"triton": "correct",
                                                                                  "cuda": "correct"}
    assert (tmp_path / "modal.log").stat().st_size > 0  # the image build's output was kept


def test_a_four_candidate_run(kforge_cli, tmp_path: Path) -> None:
    proc = kforge_cli("run", REPO / "recipes" / "modal-smoke.toml", "--json", "--set", f"run.out={tmp_path}",
                      timeout=3600)
    assert proc.returncode == 0, proc.stderr
    from kforge.store import Store

    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    store = Store(run_dir)
    try:
        results = list(store.results())
    finally:
        store.close()
    assert len(results) == 4
    for res in results:
        assert res["status"] == "correct", res.get("error")
        assert "H100" in res["device"] and res["versions"]["modal"]["call_id"]
        assert res["versions"]["transport"]["mode"] in ("cuda_ipc", "host")
        assert res["versions"]["image"]["installed"]["ninja"]
    assert (run_dir / "logs" / "modal.log").exists()
    assert json.loads((run_dir / "modal_calls.json").read_text())["calls"]
