"""Below the Modal boundary, for real: the CPU build tier's body (a real C++ build into a folder standing
for the Volume), the correctness tier on a cheaper GPU class, Modal's output sent to stderr and the run's
log, what the image really holds, and every Modal call bound against the installed client's signatures."""

from __future__ import annotations

import asyncio
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
modal = pytest.importorskip("modal")

from modal_doubles import Aio, FakeModal  # noqa: E402

from kforge.executors import modal_app  # noqa: E402
from kforge.executors.modal import ModalExecutor, ModalSettings  # noqa: E402
from kforge.executors.modal_app import ContainerJudge, run_build_job  # noqa: E402
from kforge.runtime import protocol as P  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
needs_cxx = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                               reason="needs a C++ compiler")

# A load_inline extension that includes pybind11 alone: a few seconds of g++ (see test_build_cache.py).
# pybind11 alone, no torch/extension.h (which takes ~25 s to compile here): what the tier does is the same
CPP = r'''
import torch
from torch.utils.cpp_extension import load_inline
SRC = """
#include <pybind11/pybind11.h>
int twice(int x) { return 2 * x; }   // TAG
"""
ext = load_inline(name="kf_modal_tier_TAG", cpp_sources=SRC, functions=["twice"], verbose=False,
                  extra_cflags=["-O0"], no_implicit_headers=True, with_pytorch_error_handling=False)
'''


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


@needs_cxx
def test_the_build_tier_builds_into_the_volume_commits_and_reuses(tmp_path: Path) -> None:
    reload, commit = Counter(), Counter()
    job = {"source": CPP.replace("TAG", "ok"), "backend": "cuda", "arch": "8.9;9.0a", "timeout_s": 120}
    first = run_build_job(job, tmp_path / "builds", reload=reload, commit=commit)
    assert first["status"] == "ok" and first["cached"] is False, first
    ext = Path(first["env"]["TORCH_EXTENSIONS_DIR"])
    assert ext.parent.parent == tmp_path / "builds" and list(ext.rglob("*.so"))
    assert first["env"]["TORCH_CUDA_ARCH_LIST"] == "8.9;9.0a"
    assert (reload.n, commit.n) == (1, 1)  # reloaded before looking, committed after building
    again = run_build_job(job, tmp_path / "builds", reload=reload, commit=commit)
    assert again["cached"] is True and again["key"] == first["key"] and commit.n == 1  # nothing new to commit
    slow = dict(job, source="from torch.utils.cpp_extension import load_inline\nimport time\ntime.sleep(60)\n",
                timeout_s=3)
    killed = run_build_job(slow, tmp_path / "builds", reload=reload, commit=commit)
    assert killed["status"] == "timeout" and "killed" in killed["error"]
    assert not (tmp_path / "builds" / killed["key"]).exists()  # a half-built entry is removed


def relu_builder_double(outcomes: dict[str, dict[str, Any]], jobs: list[dict[str, Any]]) -> Any:
    class Builder:
        async def _remote(self, job: dict[str, Any]) -> dict[str, Any]:
            jobs.append(job)
            await asyncio.sleep(0.05)
            if job["source"] not in outcomes:
                raise ConnectionError("no CPU containers")
            return outcomes[job["source"]]

        def __init__(self) -> None:
            self.remote = Aio(self._remote)

    return Builder()


def test_the_executor_sends_compiled_candidates_to_the_build_tier_first(tmp_path: Path, container_env,
                                                                       make_request, candidates) -> None:
    """A build that fails is the candidate's compile_error, decided without a GPU container; the same
    source is built once per run; a built candidate reaches the judge with the build's environment; a
    build tier that fails leaves the build to the sandbox, flagged."""
    container_env()
    broken = "from torch.utils.cpp_extension import load_inline\nload_inline(name='x', cpp_sources='oops')\n"
    built = candidates["solution"] + "\n# from torch.utils.cpp_extension import load_inline; load_inline(\n"
    jobs: list[dict[str, Any]] = []
    builder = relu_builder_double({
        broken: {"status": "error", "error": "x.cpp:1: error: oops", "seconds": 1.5, "key": "k1"},
        built: {"status": "ok", "cached": False, "seconds": 2.0, "key": "k2",
                "env": {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "TORCH_CUDA_ARCH_LIST": "9.0a"}}}, jobs)
    seen: list[dict[str, Any]] = []

    def containers(retire: Callable[[], None]) -> ContainerJudge:
        container = ContainerJudge.start(device="cpu", retire=retire)
        real = container.evaluate
        container.evaluate = lambda req: (seen.append(req), real(req))[1]  # type: ignore[method-assign]
        return container

    fake = FakeModal(containers, max_containers=2)

    async def go() -> list[P.EvalResult]:
        executor = ModalExecutor(max_containers=2)
        executor.bind(fake, fake.from_id, builder=builder)
        await executor.start(tmp_path / "run" / "logs")
        try:
            reqs = [make_request(broken, "broken", backend="cuda"), make_request(built, "built", backend="cuda"),
                    make_request(built, "built-again", backend="cuda"),
                    make_request(built + "\n", "tier-down", backend="cuda")]
            return list(await asyncio.gather(*(executor.evaluate(r) for r in reqs)))
        finally:
            await executor.shutdown()

    try:
        broken_res, built_res, again_res, down_res = asyncio.run(go())
    finally:
        fake.close()
    assert broken_res.status == P.COMPILE_ERROR and broken_res.guard == "compile" and "oops" in broken_res.error
    assert "compile_stage" in broken_res.flags and "broken" not in fake.spawned  # no GPU container for it
    assert len(jobs) == 3 and {j["arch"] for j in jobs} == {"9.0a"}  # one build per source; H100's arch
    assert built_res.status == P.CORRECT and "prebuilt" in built_res.flags and built_res.durations_s["build"] == 2.0
    assert again_res.status == P.CORRECT
    assert {r["request_id"]: r["build_env"]["TORCH_CUDA_ARCH_LIST"] for r in seen
            if r["build_env"]} == {"built": "9.0a", "built-again": "9.0a"}
    assert down_res.status == P.CORRECT and "prebuilt" not in down_res.flags
    assert any(f.startswith("build_tier_failed: ConnectionError: no CPU containers") for f in down_res.flags)


def test_the_correctness_tier_runs_first_and_only_correct_candidates_are_timed(
        tmp_path: Path, container_env, make_request, candidates) -> None:
    container_env()
    cheap = FakeModal(lambda retire: ContainerJudge.start(device="cpu", retire=retire), max_containers=1)
    pinned = FakeModal(lambda retire: ContainerJudge.start(device="cpu", retire=retire), max_containers=1)
    asked: list[int] = []
    real_spawn = cheap.spawn.aio

    async def spy(request: dict[str, Any]) -> Any:
        asked.append(request["min_samples"])
        return await real_spawn(request)

    cheap.spawn = Aio(spy)

    async def go() -> list[P.EvalResult]:
        executor = ModalExecutor(max_containers=2, correctness_gpu="L4")
        executor.bind(pinned, pinned.from_id, correctness=cheap)
        await executor.start(tmp_path / "logs")
        try:
            reqs = [make_request(candidates["wrong"], "wrong", min_samples=3),
                    make_request(candidates["solution"], "good", min_samples=3, max_timing_s=0.5)]
            return list(await asyncio.gather(*(executor.evaluate(r) for r in reqs)))
        finally:
            await executor.shutdown()

    try:
        wrong, good = asyncio.run(go())
    finally:
        cheap.close()
        pinned.close()
    assert asked == [0, 0]  # correctness only on the cheap GPU
    assert wrong.status == P.INCORRECT and any(f.startswith("correctness_tier") for f in wrong.flags)
    assert pinned.spawned == ["good"]  # the wrong one never reached the pinned GPU
    assert good.status == P.CORRECT and good.versions["modal"]["correctness_tier"]["status"] == P.CORRECT
    assert good.versions["modal"]["correctness_tier"]["gpu"] == "L4"


def test_modal_output_goes_to_stderr_and_the_run_log_never_stdout(tmp_path: Path, capsys) -> None:
    from modal.output import OutputManager

    log = tmp_path / "modal.log"
    with modal_app.build_output(log):
        OutputManager.get().print("Building image im-123: step 1/4")
    out = capsys.readouterr()
    assert "Building image im-123" in out.err and "Building image" not in out.out
    with modal_app.build_output(log, quiet=True):
        OutputManager.get().print("quiet step")
    out = capsys.readouterr()
    assert "quiet step" not in out.err + out.out
    text = log.read_text()
    assert "Building image im-123" in text and "quiet step" in text


def test_what_the_image_really_holds_is_recorded(container_env, make_request) -> None:
    import torch

    installed = modal_app.installed_versions()
    assert installed["torch"] == torch.__version__.split("+")[0] or installed["torch"] == torch.__version__
    assert installed["distributions"] > 10 and len(installed["distributions_sha256"]) == 16
    container_env(ModalSettings.from_options({"cutlass": "", "torch": "0.0.1"}))

    class NoJudge:
        info = {"device": "CPU (test)", "device_kind": "cpu"}

    container = ContainerJudge(NoJudge(), {**ModalSettings.from_options({"cutlass": ""}).container_record(),
                                           "image": {"torch": "0.0.1", "cutlass": None}}, installed=installed)
    answer = P.EvalResult.from_dict(container.evaluate(make_request("x = 1", "cut", backend="cutlass").to_dict()))
    assert answer.status == P.INFRA_ERROR and "CUTLASS headers" in (answer.error or "")
    assert answer.versions["image"]["installed"]["torch"] == installed["torch"]
    assert any(f.startswith("image_pin_mismatch: torch 0.0.1 pinned") for f in answer.flags)


def test_every_modal_call_binds_to_the_installed_client() -> None:
    """Each call kforge makes, with the arguments it passes, against the signatures of modal 1.6.x."""
    settings = ModalSettings.from_options({"correctness_gpu": "L4", "torch_index_url": "https://example/whl"})
    sig = inspect.signature
    sig(modal.App.cls).bind(modal.App("t"), **modal_app.class_options(settings))
    sig(modal.App.cls).bind(modal.App("t"), **modal_app.builder_options(settings))
    spec = settings.image
    sig(modal.Image.uv_pip_install).bind(modal.Image.debian_slim(), *spec.requirements(), **spec.index_options())
    assert spec.index_options()["extra_options"] == "--index-strategy unsafe-best-match"
    assert ModalSettings.from_options({}).image.index_options() == {}  # PyPI only by default
    assert "ninja==1.13.2" in spec.requirements()
    sig(modal.Image.from_registry).bind(spec.base, add_python=spec.python)
    sig(modal.Volume.from_name).bind("v", create_if_missing=True)
    sig(modal.Retries).bind(max_retries=2, backoff_coefficient=2.0, initial_delay=1.0)
    sig(modal.FunctionCall.from_id).bind(modal.FunctionCall, "fc-1")
    sig(modal.FunctionCall.cancel).bind(None, terminate_containers=True)
    sig(modal.FunctionCall.get).bind(None)
    sig(modal.Volume.reload).bind(modal.Volume.from_name("v"))
    sig(modal.Volume.commit).bind(modal.Volume.from_name("v"))
    options = modal_app.class_options(settings)
    assert options["memory"] == (16384, 32768) and options["block_network"] is True
    assert "gpu" not in modal_app.builder_options(settings)
    classes = modal_app.app_classes(settings)  # lazily: nothing is sent to Modal
    assert classes["builder"] is not None and classes["correctness"] is not None
    assert isinstance(classes["correctness"], modal.Cls) and isinstance(classes["builder"], modal.Cls)
