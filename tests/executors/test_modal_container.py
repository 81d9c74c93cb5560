"""Below the Modal boundary: the container side of the modal executor is the same runtime as local,
judged for real on the CPU (Triton's interpreter), through Modal's own ``Function.local()``."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")
modal = pytest.importorskip("modal")

from kforge.executors import modal_app  # noqa: E402
from kforge.executors.modal import ModalSettings  # noqa: E402
from kforge.runtime import protocol as P  # noqa: E402


def test_function_local_judges_real_candidates(make_request, candidates, container_env) -> None:
    """The App's own method, run with Function.local(): @modal.enter starts one real judge, and each call
    returns that judge's verdict as a dict, a candidate's failure included (never an exception)."""
    settings = ModalSettings.from_options({"volume": ""})
    container_env(settings)
    _, judge_cls = modal_app.build_app(settings)
    obj = judge_cls()
    try:
        verdicts = {}
        for kind in ("solution", "wrong", "crash", "syntax"):
            trials = 5 if kind == "solution" else 2  # the solution gets the recipe's minimum: five trials
            data = obj.evaluate.local(make_request(candidates[kind], request_id=f"local-{kind}", trials=trials,
                                                   ops_check=True).to_dict())
            assert isinstance(data, dict)
            verdicts[kind] = P.EvalResult.from_dict(data)
    finally:
        _close_local_instance(obj)

    ok = verdicts["solution"]
    assert ok.status == P.CORRECT, ok.error
    assert ok.trials_passed == ok.trials_run == 5 and ok.max_abs_err is not None
    assert verdicts["wrong"].status == P.INCORRECT and verdicts["wrong"].mismatch
    assert verdicts["crash"].status == P.RUNTIME_ERROR and verdicts["crash"].guard == "crash"
    assert verdicts["syntax"].status == P.COMPILE_ERROR
    for result in verdicts.values():
        # the device that really judged, from the judge itself, and the image and container recorded
        assert result.device and result.device.startswith("CPU") and result.device_kind == "cpu"
        assert result.versions["torch"] and result.versions["harness"]
        assert result.versions["image"]["torch"] == settings.image.torch
        assert result.versions["image"]["base"] == settings.image.base
        assert result.versions["modal"]["gpu_requested"] == "H100!"
        assert result.versions["modal"]["task_id"] == "ta-test"
    # one judge per container: the same instance judged all four
    assert [v.versions["modal"]["calls_in_container"] for v in verdicts.values()] == [1, 2, 3, 4]


def test_timed_verdict_on_the_cpu(make_request, candidates, container_env) -> None:
    """Timing runs too (interleaved with eager, labelled as CPU timing)."""
    container_env()
    container = modal_app.ContainerJudge.start(device="cpu", retire=lambda: None)
    try:
        data = container.evaluate(make_request(candidates["solution"], min_samples=3, max_samples=3,
                                               warmup=1).to_dict())
    finally:
        container.close()
    result = P.EvalResult.from_dict(data)
    assert result.status == P.CORRECT, result.error
    assert result.timing and result.baseline_eager and result.speedup_vs_eager
    assert "cpu_timing" in result.flags


# -- the retirement policy (a stand-in judge: CUDA faults can't happen on the CPU) ---------------------
class ScriptedJudge:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.calls = 0

    def evaluate(self, req: P.EvalRequest) -> P.EvalResult:
        self.calls += 1
        return P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, **self.fields)

    def close(self) -> None:
        pass


FAULT = dict(status=P.RUNTIME_ERROR, guard="exception", device="NVIDIA H100 80GB HBM3", device_kind="cuda",
             error="RuntimeError: CUDA error: an illegal memory access was encountered")
RECORD = {"gpu_requested": "H100!", "pinned": True, "app": "kforge"}


def test_candidate_cuda_fault_keeps_a_healthy_container(make_request) -> None:
    retired: list[int] = []
    container = modal_app.ContainerJudge(ScriptedJudge(**FAULT), RECORD, probe=lambda: None,
                                         retire=lambda: retired.append(1))
    for _ in range(2):
        data = container.evaluate(make_request("x").to_dict())
        assert data["status"] == P.RUNTIME_ERROR
    assert retired == [] and container.broken is None
    assert modal_app.cuda_fault(P.EvalResult.from_dict(data)) == "illegal memory access"


def test_retire_on_candidate_fault_when_asked(make_request) -> None:
    retired: list[int] = []
    container = modal_app.ContainerJudge(ScriptedJudge(**FAULT), {**RECORD, "retire_on_candidate_fault": True},
                                         probe=lambda: None, retire=lambda: retired.append(1))
    data = container.evaluate(make_request("x").to_dict())
    assert data["status"] == P.RUNTIME_ERROR  # the result still comes back
    assert retired == [1] and any(f.startswith("container_retired") for f in data["flags"])


def test_broken_judge_retires_and_raises_for_a_retry(make_request) -> None:
    retired: list[int] = []
    judge = ScriptedJudge(**FAULT)
    container = modal_app.ContainerJudge(judge, RECORD, probe=lambda: "CUDA error: unspecified launch failure",
                                         retire=lambda: retired.append(1))
    with pytest.raises(modal_app.JudgeUnhealthy, match="probe"):
        container.evaluate(make_request("x").to_dict())
    assert retired == [1]
    with pytest.raises(modal_app.JudgeUnhealthy, match="retired"):  # a queued input is not judged here
        container.evaluate(make_request("y").to_dict())
    assert judge.calls == 1


@pytest.mark.parametrize(("device", "flagged"), [("NVIDIA H100 80GB HBM3", False), ("NVIDIA H200", True),
                                                  ("NVIDIA A100-SXM4-80GB", True)])
def test_a_pinned_gpu_that_did_not_run_is_flagged(make_request, device: str, flagged: bool) -> None:
    judge = ScriptedJudge(status=P.CORRECT, device=device, device_kind="cuda")
    container = modal_app.ContainerJudge(judge, RECORD, probe=lambda: None, retire=lambda: None)
    flags = container.evaluate(make_request("x").to_dict())["flags"]
    assert any(f.startswith("gpu_mismatch") for f in flags) is flagged


def test_out_of_memory_is_not_a_cuda_fault() -> None:
    oom = P.EvalResult(request_id="r", problem_id="p", status=P.RUNTIME_ERROR,
                       error="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert modal_app.cuda_fault(oom) is None
    assert modal_app.cuda_fault(P.EvalResult(request_id="r", problem_id="p", status=P.RUNTIME_ERROR,
                                             log_tail="Triton Error [CUDA]: misaligned address")) is not None


# -- the App's configuration ---------------------------------------------------------------------------
def test_class_options_carry_the_recipe() -> None:
    settings = ModalSettings.from_options({"gpu": "H100!", "timeout_s": 900, "max_containers": 5, "retries": 3,
                                           "volume": "cache-vol", "torch": "2.11.0"})
    opts = modal_app.class_options(settings)
    assert opts["gpu"] == "H100!" and opts["timeout"] == 900 and opts["max_containers"] == 5
    assert isinstance(opts["retries"], modal.Retries) and opts["retries"].max_retries == 3
    assert isinstance(opts["image"], modal.Image)
    assert set(opts["volumes"]) == {modal_app.CACHE_MOUNT}
    assert opts["env"]["TRITON_CACHE_DIR"].startswith(modal_app.CACHE_MOUNT)
    assert '"torch": "2.11.0"' in opts["env"][modal_app.ENV_SETTINGS]
    fallback = ModalSettings.from_options({"gpu": ["H100!", "H200"], "allow_fallback": True, "volume": ""})
    assert modal_app.class_options(fallback)["gpu"] == ["H100!", "H200"]
    assert modal_app.class_options(fallback)["volumes"] == {}


def test_the_modal_api_the_executor_calls_exists_in_the_installed_client() -> None:
    """The thin layer is written against Modal 1.6's documented API; check each name and parameter it
    uses on the installed client (offline: nothing here talks to Modal)."""
    import inspect

    assert modal.__version__.startswith("1.6.")
    _, judge_cls = modal_app.build_app(ModalSettings.from_options({"volume": ""}))
    method = judge_cls().evaluate
    assert callable(method.spawn.aio) and callable(method.local)
    assert "detach" in inspect.signature(modal.App.run).parameters
    assert callable(modal.FunctionCall.from_id)
    for name in ("get", "cancel"):
        assert callable(getattr(getattr(modal.FunctionCall, name), "aio", None)), name
    assert "terminate_containers" in inspect.signature(modal.FunctionCall.cancel).parameters
    assert callable(modal.experimental.stop_fetching_inputs) and modal.is_local()
    assert "create_if_missing" in inspect.signature(modal.Volume.from_name).parameters


def _close_local_instance(obj: Any) -> None:
    """Run the class's @modal.exit on the instance Function.local() created (Modal leaves it to us)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_instance = getattr(obj, "_cached_user_cls_instance", None)
        instance = get_instance() if get_instance is not None else None
    container = getattr(instance, "container", None)
    if container is not None:
        container.close()
