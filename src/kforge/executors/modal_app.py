"""The Modal side of the ``modal`` executor: the image, the App and the judge class that runs in it.

Imported only where Modal is used: the executor's ``start()``, tests, and inside the containers, where
Modal imports this module to find :class:`ModalJudge`. It needs the Modal client, not torch; torch
and the judge load in the container (``@modal.enter``).

The App is built per run by :func:`build_app` from the recipe's settings (GPU, timeout, retries,
concurrency cap, image pins), so :class:`ModalJudge` is defined undecorated at module scope and
decorated there; a container finds it by its module and name, as Modal does for any class decorated
outside its definition.

What runs in the container is :class:`ContainerJudge`, plain Python around the same
:class:`kforge.runtime.judge.Judge` the local executor runs: one judge per container, one candidate
per call, each candidate in its own sandbox process. Why and when a container is retired:

- A candidate's CUDA fault (illegal address, misaligned access, device assert, a kernel that never
  returns) happens in the candidate's sandbox process, whose CUDA context dies with it; the judge's
  own context is a different one and stays usable. So a candidate's fault alone does not retire the
  container, unless the recipe asks for it (``retire_on_candidate_fault``).
- After every candidate the judge's own context is probed (a synchronisation and a tiny kernel, with
  a time limit). A probe that fails means the fault reached the judge (a sticky error in its own
  context, a GPU that stopped answering, an uncontained Xid): the container stops taking inputs
  (``modal.experimental.stop_fetching_inputs``) and the call raises, so Modal retries that candidate
  on a fresh container. That is the only exception the function ever raises.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import modal

if TYPE_CHECKING:
    from kforge.executors.modal import ImageSpec, ModalSettings
    from kforge.runtime.protocol import EvalResult

CACHE_MOUNT = "/cache"
CUTLASS_DIR = "/opt/cutlass"
ENV_SETTINGS = "KFORGE_MODAL_SETTINGS"  # what the executor asked for; every result records it
PROBE_TIMEOUT_S = 30.0

# How a CUDA fault reads in a result's error or the candidate's output tail. Out-of-memory is not a
# fault (the memory goes back when the sandbox exits).
CUDA_FAULT = re.compile(
    r"illegal memory access|illegal instruction|misaligned address|unspecified launch failure|device-side assert"
    r"|CUDA_ERROR_(?!OUT_OF_MEMORY)\w+|Triton Error \[CUDA\]|uncorrectable ECC|\bXid\b|GPU is lost|fell off the bus",
    re.IGNORECASE)


class JudgeUnhealthy(Exception):
    """The judge's own GPU context failed its probe: the container retires and Modal retries the call."""


def cuda_fault(result: EvalResult) -> str | None:
    """The text of the CUDA fault a result shows, if any."""
    for text in (result.error, result.log_tail):
        if text:
            match = CUDA_FAULT.search(text)
            if match:
                return match.group(0)
    return None


def cuda_probe(device: Any, timeout_s: float = PROBE_TIMEOUT_S) -> Callable[[], str | None]:
    """A check of the judge's own CUDA context: None if healthy, else what went wrong."""

    def probe() -> str | None:
        import torch

        outcome: dict[str, str] = {}

        def run() -> None:
            try:
                torch.cuda.synchronize(device)
                value = float((torch.ones(256, device=device) * 2).sum().item())
                if value != 512.0:
                    outcome["error"] = f"a probe kernel computed {value}, not 512"
            except Exception as exc:  # noqa: BLE001 - any failure here is the judge's context
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            return f"the GPU did not answer a probe within {timeout_s:g} s"
        return outcome.get("error")

    return probe


def stop_fetching_inputs() -> None:
    """Retire this container after the current call (a no-op outside a Modal container)."""
    if not modal.is_local():
        modal.experimental.stop_fetching_inputs()


def _gpu_matches(requested: str, device: str) -> bool:
    family = requested.split(":")[0].rstrip("!+").upper()
    family = re.sub(r"-\d+GB$", "", family)
    squash = re.compile(r"[^A-Z0-9]")
    return squash.sub("", family) in squash.sub("", device.upper())


class ContainerJudge:
    """One judge in one container, and what a Modal call does around it (no Modal API in here)."""

    def __init__(self, judge: Any, record: dict[str, Any] | None = None,
                 probe: Callable[[], str | None] | None = None, retire: Callable[[], None] = stop_fetching_inputs) -> None:
        self.judge = judge
        self.record = dict(record or {})
        self.probe = probe or (lambda: None)
        self.retire = retire
        self.broken: str | None = None  # why the judge can't be trusted any more
        self.calls = 0

    @classmethod
    def start(cls, device: str | None = None, retire: Callable[[], None] = stop_fetching_inputs) -> ContainerJudge:
        from kforge.runtime.judge import Judge

        record = json.loads(os.environ.get(ENV_SETTINGS) or "{}")
        judge = Judge(device=device or os.environ.get("KFORGE_DEVICE") or "auto")
        probe = cuda_probe(judge.device) if judge.device.type == "cuda" else None
        return cls(judge, record, probe=probe, retire=retire)

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        from kforge.runtime import protocol as P

        req = P.EvalRequest.from_dict(request)
        if self.broken:  # an input Modal handed over before the container stopped fetching
            raise JudgeUnhealthy(f"this container was retired ({self.broken}); the call is retried elsewhere")
        self.calls += 1
        result = self.judge.evaluate(req)
        self._annotate(result)
        broken = self.probe()
        if broken is not None:
            self.broken = f"the judge's own CUDA context failed its probe: {broken}"
            self.retire()
            raise JudgeUnhealthy(f"candidate {req.request_id}: {self.broken}")
        fault = cuda_fault(result)
        if fault is not None and self.record.get("retire_on_candidate_fault"):
            result.flags.append(f"container_retired: the candidate's CUDA fault ({fault}), "
                                "retire_on_candidate_fault is set")
            self.retire()
        return result.to_dict()

    def _annotate(self, result: EvalResult) -> None:
        """Record where the result was judged: the image's pins and the Modal container."""
        image = dict(self.record.get("image") or {})
        if image.get("cutlass"):
            image["cutlass_headers_present"] = os.path.isdir(os.path.join(CUTLASS_DIR, "include", "cutlass"))
        if image:
            result.versions["image"] = image
        container = {"gpu_requested": self.record.get("gpu_requested"), "app": self.record.get("app"),
                     "calls_in_container": self.calls,
                     **{key.lower(): os.environ[env] for key, env in
                        (("task_id", "MODAL_TASK_ID"), ("region", "MODAL_REGION"),
                         ("cloud", "MODAL_CLOUD_PROVIDER"), ("image_id", "MODAL_IMAGE_ID")) if os.environ.get(env)}}
        result.versions["modal"] = {k: v for k, v in container.items() if v is not None}
        requested = self.record.get("gpu_requested")
        if (self.record.get("pinned") and isinstance(requested, str) and result.device_kind == "cuda"
                and result.device and not _gpu_matches(requested, result.device)):
            result.flags.append(f"gpu_mismatch: asked for {requested}, judged on {result.device}")

    def close(self) -> None:
        self.judge.close()


class ModalJudge:
    """The Modal class (decorated by :func:`build_app`): one judge per container, one candidate per call."""

    container: ContainerJudge

    @modal.enter()
    def start_judge(self) -> None:
        self.container = ContainerJudge.start()

    @modal.method()
    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Judge one EvalRequest (as a dict); returns its EvalResult as a dict."""
        return self.container.evaluate(request)

    @modal.exit()
    def stop_judge(self) -> None:
        self.container.close()


def build_image(spec: ImageSpec) -> modal.Image:
    """A CUDA devel base with Python, CUTLASS headers, pinned torch/triton/numpy, then kforge's source."""
    image = modal.Image.from_registry(spec.base, add_python=spec.python)
    env = {"KFORGE_DEVICE": "cuda"}
    if spec.cutlass:
        image = image.apt_install("git").run_commands(
            f"git clone --depth 1 --branch v{spec.cutlass} https://github.com/NVIDIA/cutlass.git {CUTLASS_DIR}")
        env.update(CUTLASS_PATH=CUTLASS_DIR,
                   CPLUS_INCLUDE_PATH=f"{CUTLASS_DIR}/include:{CUTLASS_DIR}/tools/util/include")
    image = image.uv_pip_install(f"torch=={spec.torch}", f"triton=={spec.triton}", f"numpy=={spec.numpy}",
                                 extra_index_url=spec.torch_index_url or None)
    # last, so editing kforge never rebuilds the layers above
    return image.env(env).add_local_python_source(*spec.local_sources())


def class_options(settings: ModalSettings) -> dict[str, Any]:
    """The ``@app.cls(...)`` arguments for these settings: GPU, timeout, retries, cap, image, cache."""
    env: dict[str, str | None] = {ENV_SETTINGS: json.dumps(settings.container_record(), sort_keys=True)}
    volumes: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {}
    if settings.volume:
        volumes[CACHE_MOUNT] = modal.Volume.from_name(settings.volume, create_if_missing=True)
        env["TRITON_CACHE_DIR"] = f"{CACHE_MOUNT}/triton"
    return {
        "image": build_image(settings.image),
        "gpu": settings.gpu_request(),
        "timeout": settings.timeout_s,
        # Modal retries an input when the function raises or its container is lost; ours raises only when
        # the judge itself broke, so a candidate's own failure is never retried.
        "retries": modal.Retries(max_retries=settings.retries, backoff_coefficient=2.0, initial_delay=1.0),
        "max_containers": settings.max_containers,
        "scaledown_window": settings.scaledown_window_s,
        "cpu": settings.cpu,
        "memory": settings.memory_mib,
        "volumes": volumes,
        "env": env,
    }


def build_app(settings: ModalSettings) -> tuple[modal.App, Any]:
    """The App and its judge class for these settings (nothing is sent to Modal until it runs)."""
    app = modal.App(settings.app_name)
    judge_cls = app.cls(**class_options(settings))(ModalJudge)
    return app, judge_cls
