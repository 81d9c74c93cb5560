"""``kforge modal check`` without Modal's service: not installed (2), not configured (3), and
configured but offline (3), each with a message that says what to do."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kforge.commands import modal as modal_cmd

REPO = Path(__file__).resolve().parents[2]


def _check(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """The check in a fresh interpreter (it leaves a Modal client thread behind when offline)."""
    code = f"from kforge.commands.modal import modal_group; modal_group({['check', *args]!r}, prog_name='kforge modal')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_env(isolated_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("modal")
    env = {k: v for k, v in isolated_env.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "modal.toml"))
    return env


def test_offline_check_says_so_and_exits_3(offline_env: dict[str, str]) -> None:
    env = dict(offline_env, MODAL_TOKEN_ID="ak-test", MODAL_TOKEN_SECRET="as-test",
               MODAL_SERVER_URL=f"http://127.0.0.1:{_closed_port()}")
    proc = _check(["--timeout", "2"], env)
    assert proc.returncode == 3, proc.stderr
    assert "configured: yes (credentials from environment)" in proc.stdout
    assert "reachable:  no" in proc.stdout
    assert "offline" in proc.stderr and "network access" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unconfigured_check_points_at_modal_token_new(offline_env: dict[str, str]) -> None:
    proc = _check(["--json"], offline_env)
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["installed"] is True and report["configured"] is False and report["reachable"] is False
    assert "modal token new" in report["message"] and "modal token new" in proc.stderr


def test_not_installed_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = modal_cmd.importlib.util.find_spec
    monkeypatch.setattr(modal_cmd.importlib.util, "find_spec",
                        lambda name, *a: None if name == "modal" else real_find_spec(name, *a))
    result = CliRunner().invoke(modal_cmd.modal_group, ["check"])
    assert result.exit_code == 2
    assert "installed:  no" in result.output and "pip install 'modal~=1.6.0'" in result.output


def test_modal_check_is_a_kforge_command_once_wired(kforge_cli, offline_env: dict[str, str]) -> None:
    from kforge.cli import cli

    if "modal" not in cli.commands:
        pytest.skip("`kforge modal` is not wired into cli.py yet")
    proc = kforge_cli("modal", "check", env=offline_env, timeout=60)
    assert proc.returncode == 3 and "modal token new" in proc.stderr


def test_image_check_stops_at_an_unconfigured_modal(offline_env: dict[str, str], tmp_path: Path) -> None:
    """--image builds nothing (and spends nothing) until Modal is configured and reachable."""
    proc = _check(["--image", "--json", "--log-dir", str(tmp_path / "logs")], offline_env)
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert "image" not in report and "modal token new" in report["message"]
    assert not (tmp_path / "logs").exists()


def test_image_check_judges_the_known_good_candidates(tmp_path: Path, container_env) -> None:
    """The --image body with the App replaced by FakeModal running the real container judge on the CPU
    (the CUDA candidate needs a GPU: only the Triton one here)."""
    pytest.importorskip("torch")
    from modal_doubles import FakeModal

    from kforge.executors.modal_app import ContainerJudge

    container_env()
    fakes: list[FakeModal] = []

    def bind(executor) -> None:
        fake = FakeModal(lambda retire: ContainerJudge.start(device="cpu", retire=retire), max_containers=1)
        fakes.append(fake)
        executor.bind(fake, fake.from_id)

    try:
        code, report = modal_cmd.check_image({}, tmp_path, bind=bind, backends=("triton",))
    finally:
        for fake in fakes:
            fake.close()
    assert code == 0, report
    [cand] = report["candidates"]
    assert cand["backend"] == "triton" and cand["status"] == "correct" and cand["transport"] == "host"
    assert "known-good candidates passed" in report["message"]

    def refuse(executor) -> None:
        class Down:
            async def _spawn(self, request):
                raise ConnectionError("Modal is down")

        from modal_doubles import Aio

        down = Down()
        down.spawn = Aio(down._spawn)  # type: ignore[attr-defined]
        executor.bind(down, lambda call_id: None)

    code, report = modal_cmd.check_image({}, tmp_path, bind=refuse, backends=("triton",))
    assert code == 3 and "did not pass" in report["message"] and "Modal is down" in report["message"]
    assert str(tmp_path / "modal.log") in report["message"]
