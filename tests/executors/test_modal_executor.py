"""The thin layer above the Modal boundary: spawn, get, cancel and re-attach, against FakeModal (a
double with Modal's semantics at exactly that boundary) running the real container function, with a
real CPU judge, in worker threads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from modal_doubles import FakeModal  # noqa: E402

from kforge.executors.modal import CALLS_FILE, CallLedger, ModalExecutor  # noqa: E402
from kforge.executors.modal_app import ContainerJudge  # noqa: E402
from kforge.runtime import protocol as P  # noqa: E402


def cpu_container(retire: Callable[[], None]) -> ContainerJudge:
    return ContainerJudge.start(device="cpu", retire=retire)


def ledger(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / CALLS_FILE).read_text())["calls"]


async def started(run_dir: Path, fake: FakeModal, **options: Any) -> ModalExecutor:
    executor = ModalExecutor(**{"max_containers": fake.max_containers, "retries": fake.max_retries, **options})
    executor.bind(fake, fake.from_id)
    await executor.start(run_dir / "logs")
    return executor


def test_results_stream_as_each_finishes(tmp_path: Path, container_env, make_request, candidates) -> None:
    """A slow first request (a cold start of 3 s) does not hold back a fast second one; both were in
    flight at once; each result names the device that judged it and the Modal call."""
    container_env()
    slow, fast = make_request(candidates["solution"], "slow"), make_request(candidates["wrong"], "fast")
    fake = FakeModal(cpu_container, max_containers=2, delays={"slow": 3.0})

    async def go() -> tuple[list[P.EvalResult], ModalExecutor]:
        executor = await started(tmp_path, fake)
        try:
            return [r async for r in executor.submit([slow, fast])], executor
        finally:
            await executor.shutdown()

    try:
        results, executor = asyncio.run(go())
    finally:
        fake.close()
    assert [r.request_id for r in results] == ["fast", "slow"]  # completion order, not submission order
    assert fake.spawned == ["slow", "fast"] and fake.finished == ["fast", "slow"]
    by_id = {r.request_id: r for r in results}
    assert by_id["slow"].status == P.CORRECT and by_id["fast"].status == P.INCORRECT
    calls = ledger(tmp_path)
    for rid, result in by_id.items():
        assert result.device and result.device.startswith("CPU")  # the judge's own device info
        assert result.versions["modal"]["call_id"] == calls[rid]["call_id"]
        assert result.versions["image"]["torch"] == executor.settings.image.torch
        assert calls[rid]["state"] == "done"
    assert executor.device_info["device"] == by_id["slow"].device  # the run summary names the real device
    busy = executor.busy_fraction()
    assert busy is not None and 0 < busy <= 1


def test_interrupt_cancels_the_outstanding_call(tmp_path: Path, container_env, make_request, candidates) -> None:
    container_env()
    req = make_request(candidates["solution"], "queued")
    fake = FakeModal(cpu_container, max_containers=1, delays={"queued": 60.0})

    async def go() -> None:
        executor = await started(tmp_path, fake)
        task = asyncio.ensure_future(executor.evaluate(req))
        for _ in range(200):  # until the call is spawned and its id written down
            await asyncio.sleep(0.01)
            if (tmp_path / CALLS_FILE).is_file():
                break
        call_id = ledger(tmp_path)["queued"]["call_id"]
        task.cancel()  # what the engine does to in-flight evaluations on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fake.cancelled == [(call_id, True)]  # cancelled on Modal, its container terminated
        from modal_doubles import CallCancelled

        with pytest.raises(CallCancelled):
            await fake.calls[call_id].get.aio()
        await executor.shutdown()

    try:
        asyncio.run(go())
    finally:
        fake.close()
    assert ledger(tmp_path)["queued"]["state"] == "cancelled"
    assert fake.attempts["queued"] == 0  # it never ran


def test_resumed_run_reattaches_to_saved_calls(tmp_path: Path, container_env, make_request, candidates) -> None:
    """A call spawned by a run that then died is re-attached by id; an id Modal no longer knows is
    submitted again."""
    container_env()
    alive, gone = make_request(candidates["solution"], "c0001"), make_request(candidates["wrong"], "c0002")
    fake = FakeModal(cpu_container, max_containers=2)

    async def go() -> list[P.EvalResult]:
        # the earlier process: spawned c0001 and wrote its id down, then crashed; c0002's call expired
        earlier = await fake.spawn.aio(alive.to_dict())
        saved = CallLedger(tmp_path / CALLS_FILE)
        saved.record("c0001", earlier.object_id)
        saved.record("c0002", "fc-expired")
        executor = await started(tmp_path, fake)  # `kforge resume`: a new executor on the same run dir
        try:
            return list(await asyncio.gather(executor.evaluate(alive), executor.evaluate(gone)))
        finally:
            await executor.shutdown()

    try:
        first, second = asyncio.run(go())
    finally:
        fake.close()
    assert first.status == P.CORRECT and first.versions["modal"]["reattached"] is True
    assert first.versions["modal"]["call_id"] == "fc-0001"
    assert second.status == P.INCORRECT and "resubmitted" in second.flags
    assert fake.spawned == ["c0001", "c0002"]  # c0001 once (by the earlier run), c0002 again
    assert fake.from_id_calls == ["fc-0001", "fc-expired"]
    calls = ledger(tmp_path)
    assert calls["c0001"] == {**calls["c0001"], "call_id": "fc-0001", "state": "done"}
    assert calls["c0002"]["call_id"] != "fc-expired" and calls["c0002"]["state"] == "done"


class VolumeDouble:
    """A mounted Volume's reload() and commit(), counted (the files are a tmp folder)."""

    def __init__(self) -> None:
        self.reloads = self.commits = 0

    def reload(self) -> None:
        self.reloads += 1

    def commit(self) -> None:
        self.commits += 1


def test_lost_containers_are_rescheduled_and_a_candidate_that_crashes_two_is_its_own_fault(
        tmp_path: Path, container_env, make_request, candidates) -> None:
    """Modal's semantics: a lost container is rescheduled outside Retries. The attempt ledger (on the
    Volume: here a folder shared by every container) answers a candidate whose containers died under it
    twice as its own fault, the third time, instead of letting it crash another container."""
    container_env()
    volume = VolumeDouble()

    def containers(retire: Callable[[], None]) -> ContainerJudge:
        return ContainerJudge.start(device="cpu", retire=retire, volume=volume, attempts_dir=tmp_path / "attempts")

    lost_once = make_request(candidates["solution"], "lost-once")  # preempted once before it ran, then judged
    crashing = make_request(candidates["crash"], "crashing")  # the candidate segfaults its sandbox: a result
    killer = make_request(candidates["solution"], "killer")  # every container dies while judging it
    lost_always = make_request(candidates["solution"], "lost-always")  # never gets a container that lives
    fake = FakeModal(containers, max_containers=2, max_retries=1, max_reschedules=3,
                     lose_container={"lost-once": 1, "lost-always": 99}, crash_container={"killer": 99})

    async def go() -> dict[str, P.EvalResult]:
        executor = await started(tmp_path, fake)
        try:
            done = await asyncio.gather(*(executor.evaluate(r) for r in (lost_once, crashing, killer, lost_always)))
        finally:
            await executor.shutdown()
        return {r.request_id: r for r in done}

    try:
        results = asyncio.run(go())
    finally:
        fake.close()
    assert results["lost-once"].status == P.CORRECT and fake.attempts["lost-once"] == 2
    assert results["crashing"].status == P.RUNTIME_ERROR and fake.attempts["crashing"] == 1
    killed = results["killer"]
    assert killed.status == P.RUNTIME_ERROR and killed.guard == "container_crash"
    assert fake.attempts["killer"] == 3 and fake.reschedules["killer"] == 2  # two crashes, then answered
    assert "2 containers were lost" in (killed.error or "") and "ta-test" in (killed.error or "")
    assert killed.versions["image"]["torch"]  # recorded like any result
    failed = results["lost-always"]
    assert failed.status == P.INFRA_ERROR and fake.reschedules["lost-always"] == 4  # past max_reschedules
    assert "ContainerLost" in (failed.error or "") and "may never have been retried" in (failed.error or "")
    assert "retries:" not in (failed.error or "") and "after 1 retries" not in (failed.error or "")
    assert failed.versions["modal"]["call_id"] == ledger(tmp_path)["lost-always"]["call_id"]
    assert ledger(tmp_path)["lost-always"]["state"] == "failed"
    # committed at each begin and end (the killer: two begins, then the refusal's end), reloaded at each begin
    assert volume.commits == 7 and volume.reloads == 5


def test_a_broken_judge_retires_its_container_and_the_candidate_is_judged_again(
        tmp_path: Path, container_env, make_request, candidates) -> None:
    container_env()
    made: list[ContainerJudge] = []

    def containers(retire: Callable[[], None]) -> ContainerJudge:
        container = cpu_container(retire)
        if not made:  # the first container's GPU context "breaks" under its first candidate
            container.probe = lambda: "CUDA error: an illegal memory access was encountered"
        made.append(container)
        return container

    fake = FakeModal(containers, max_containers=1, max_retries=2)

    async def go() -> P.EvalResult:
        executor = await started(tmp_path, fake)
        try:
            return await executor.evaluate(make_request(candidates["solution"], "c1"))
        finally:
            await executor.shutdown()

    try:
        result = asyncio.run(go())
    finally:
        fake.close()
    assert result.status == P.CORRECT
    assert fake.attempts["c1"] == 2 and fake.containers_made == 2 and fake.retired == 1
    assert "JudgeUnhealthy" in fake.errors[0][1]


def test_a_refused_submission_is_an_infra_error(tmp_path: Path, make_request, candidates) -> None:
    class Down:
        class spawn:  # noqa: N801 - Modal's attribute name
            @staticmethod
            async def aio(_request: dict[str, Any]) -> Any:
                raise ConnectionError("Could not connect to the Modal server.")

    async def go() -> P.EvalResult:
        executor = ModalExecutor()
        executor.bind(Down(), lambda call_id: None)
        await executor.start(tmp_path / "logs")
        return await executor.evaluate(make_request(candidates["solution"], "c1"))

    result = asyncio.run(go())
    assert result.status == P.INFRA_ERROR and "could not submit" in (result.error or "")
