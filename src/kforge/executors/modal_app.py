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
- A container that is lost while it judges (host memory past the container's hard limit, a GPU fault
  that takes the container down, preemption) is rescheduled by Modal outside ``Retries``. The
  :class:`AttemptLedger` on the Volume counts those: a candidate that was being judged when two
  containers were lost is answered as its own fault (``runtime_error``, guard ``container_crash``) the
  third time instead of crashing another container.

The cheap tier: :func:`build_job` runs the compile stage (``kforge.runtime.build``) in a CPU-only
function into the Volume and commits it; the GPU container reloads the Volume before it judges a
candidate whose build is there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, cast

import modal

if TYPE_CHECKING:
    from kforge.executors.modal import ImageSpec, ModalSettings
    from kforge.runtime.protocol import EvalResult

CACHE_MOUNT = "/cache"
BUILDS_DIR = f"{CACHE_MOUNT}/builds"  # the compile stage's cache, on the Volume
ATTEMPTS_DIR = f"{CACHE_MOUNT}/attempts"  # which candidates were being judged by which container
CUTLASS_DIR = "/opt/cutlass"
ENV_SETTINGS = "KFORGE_MODAL_SETTINGS"  # what the executor asked for; every result records it
ATTEMPT_KEY = "modal_attempt_key"  # added to a request's dict by the executor: run and candidate
PROBE_TIMEOUT_S = 30.0
MAX_CONTAINER_CRASHES = 2
# What each result records of the image as installed (read in the container, not taken from the pins).
RECORDED_PACKAGES = ("torch", "triton", "numpy", "ninja", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13",
                     "nvidia-cuda-nvrtc", "nvidia-cudnn-cu13", "kforge-cutlass")

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
                 probe: Callable[[], str | None] | None = None, retire: Callable[[], None] = stop_fetching_inputs,
                 ledger: AttemptLedger | None = None, reload: Callable[[], None] | None = None,
                 installed: dict[str, Any] | None = None) -> None:
        self.judge = judge
        self.record = dict(record or {})
        self.probe = probe or (lambda: None)
        self.retire = retire
        self.ledger = ledger
        self.reload = reload or (lambda: None)  # the Volume's reload(): see builds other containers made
        self.installed = installed or {}
        self.broken: str | None = None  # why the judge can't be trusted any more
        self.calls = 0

    @classmethod
    def start(cls, device: str | None = None, retire: Callable[[], None] = stop_fetching_inputs,
              volume: Any = None, attempts_dir: str | Path = ATTEMPTS_DIR) -> ContainerJudge:
        from kforge.runtime.judge import Judge

        record = json.loads(os.environ.get(ENV_SETTINGS) or "{}")
        judge = Judge(device=device or os.environ.get("KFORGE_DEVICE") or "auto",
                      transport=record.get("transport") or None)
        probe = cuda_probe(judge.device) if judge.device.type == "cuda" else None
        ledger = reload = None
        if volume is not None:
            ledger = AttemptLedger(Path(attempts_dir), reload=volume.reload, commit=volume.commit)
            reload = volume.reload
        return cls(judge, record, probe=probe, retire=retire, ledger=ledger, reload=reload,
                   installed=installed_versions())

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        from kforge.runtime import protocol as P

        req = P.EvalRequest.from_dict(request)
        if self.broken:  # an input Modal handed over before the container stopped fetching
            raise JudgeUnhealthy(f"this container was retired ({self.broken}); the call is retried elsewhere")
        self.calls += 1
        if req.backend == "cutlass" and self.record.get("image", {}).get("cutlass") in (None, ""):
            return self._refuse(req, "the cutlass backend needs CUTLASS headers, and this image has none: set "
                                "executor.cutlass to a CUTLASS release (e.g. \"4.2.0\")").to_dict()
        key = str(request.get(ATTEMPT_KEY) or "")
        if self.ledger is not None and key:
            crashed = self.ledger.begin(key, task=os.environ.get("MODAL_TASK_ID", ""))
            if crashed is not None:
                res = self._refuse(req, crashed, status=P.RUNTIME_ERROR, guard="container_crash")
                self.ledger.end(key, "answered")
                return res.to_dict()
        reload_error = None
        if str(req.build_env.get("TORCH_EXTENSIONS_DIR", "")).startswith(CACHE_MOUNT + "/"):
            try:
                self.reload()  # the CPU tier committed this build from another container
            except Exception as exc:  # noqa: BLE001 - e.g. open files on the Volume: the sandbox then builds it
                reload_error = f"{type(exc).__name__}: {exc}"[:300]
        try:
            result = self.judge.evaluate(req)
        except Exception:  # a dying container (a BaseException, or no exception at all) leaves it "running"
            if self.ledger is not None and key:
                self.ledger.end(key, "raised")  # Modal's Retries takes it from here: not a crash
            raise
        self._annotate(result)
        if reload_error:
            result.flags.append(f"volume_reload_failed: {reload_error}")
        broken = self.probe()
        if self.ledger is not None and key:
            self.ledger.end(key, "raised" if broken is not None else "answered")
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

    def _refuse(self, req: Any, why: str, status: str = "infra_error", guard: str | None = None) -> EvalResult:
        """A result decided without judging (the judge's device recorded, like any other result)."""
        from kforge.runtime import protocol as P

        info = dict(getattr(self.judge, "info", {}) or {})
        res = P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, status=status, guard=guard,
                           error=why, device=info.get("device"), device_kind=info.get("device_kind"),
                           versions={k: v for k, v in info.items() if k not in ("device", "device_kind")},
                           shape_name=req.shape_name)
        self._annotate(res)
        return res

    def _annotate(self, result: EvalResult) -> None:
        """Record where the result was judged: the image's pins, what is really installed, the container."""
        image = dict(self.record.get("image") or {})
        if image.get("cutlass"):
            image["cutlass_headers_present"] = os.path.isdir(os.path.join(CUTLASS_DIR, "include", "cutlass"))
        if self.installed:
            image["installed"] = self.installed
            differ = [f"{name} {image.get(name)} pinned, {self.installed.get(name)} installed"
                      for name in ("torch", "triton", "numpy", "ninja")
                      if image.get(name) and self.installed.get(name)
                      and not str(self.installed[name]).startswith(str(image[name]))]
            if differ:
                result.flags.append("image_pin_mismatch: " + "; ".join(differ))
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


def installed_versions() -> dict[str, Any]:
    """What the image really holds (read here, not taken from the pins): the recorded packages' versions,
    nvcc's release, ninja's and CUTLASS's versions, and a hash of every installed distribution."""
    import hashlib
    from importlib import metadata

    out: dict[str, Any] = {}
    everything = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                        if d.metadata and d.metadata["Name"])
    for line in everything:
        name, _, version = line.partition("==")
        if name.lower().replace("_", "-") in RECORDED_PACKAGES:
            out[name.lower().replace("_", "-")] = version
    out["distributions"] = len(everything)
    out["distributions_sha256"] = hashlib.sha256("\n".join(everything).encode()).hexdigest()[:16]
    for tool, args, pattern in (("nvcc", ["--version"], r"release ([\d.]+)"), ("ninja", ["--version"], r"([\d.]+)")):
        try:
            text = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20).stdout
            found = re.search(pattern, text)
            out[f"{tool}_binary"] = found.group(1) if found else text.strip()[:40] or None
        except (OSError, subprocess.TimeoutExpired):
            out[f"{tool}_binary"] = None
    version_h = Path(CUTLASS_DIR, "include", "cutlass", "version.h")
    if version_h.is_file():
        text = version_h.read_text(errors="replace")
        parts = [re.search(rf"#define CUTLASS_{p}\s+(\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
        out["cutlass"] = ".".join(m.group(1) for m in parts if m) or None
    return out


class AttemptLedger:
    """Which candidates containers began judging, on the shared Volume: one small file per candidate.

    ``begin`` is written and committed before the candidate runs; ``end`` after it answered (or after the
    call raised, which Modal's ``Retries`` handles). A ``begin`` that finds the candidate still marked as
    running means the container judging it was lost (a crash, an OOM kill past the hard memory limit,
    preemption, a Modal timeout): Modal reschedules those outside ``Retries``. After ``max_crashes`` of
    them ``begin`` returns why, and the candidate is answered as its own fault instead of being run again.
    """

    def __init__(self, root: Path, reload: Callable[[], None] = lambda: None, commit: Callable[[], None] = lambda: None,
                 max_crashes: int = MAX_CONTAINER_CRASHES) -> None:
        self.root, self._reload, self._commit, self.max_crashes = root, reload, commit, max_crashes

    def _path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:200] or "_"
        return self.root / f"{safe}.json"

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        with contextlib.suppress(Exception):  # best effort: a failed commit costs only this count
            self._commit()

    def begin(self, key: str, task: str = "") -> str | None:
        with contextlib.suppress(Exception):
            self._reload()
        path = self._path(key)
        data = self._read(path)
        crashes = list(data.get("crashes") or [])
        if data.get("state") == "running":  # the last container to take it never answered
            crashes.append({"task": data.get("task"), "since": data.get("since")})
        if len(crashes) >= self.max_crashes:
            tasks = ", ".join(str(c.get("task") or "?") for c in crashes)
            return (f"the candidate was being judged when {len(crashes)} containers were lost (Modal tasks {tasks}), "
                    "so it is not run again. A container is lost when it exceeds its hard memory limit (the "
                    "sandbox's host memory counts), when a fault takes the GPU or the container down, or on "
                    "preemption or a Modal timeout; repeated on fresh containers, the likeliest cause is the candidate")
        self._write(path, {"state": "running", "task": task, "since": round(time.time(), 3), "crashes": crashes})
        return None

    def end(self, key: str, state: str) -> None:
        path = self._path(key)
        data = self._read(path)
        data.update(state=state, at=round(time.time(), 3))
        self._write(path, data)


def run_build_job(job: dict[str, Any], root: Path, reload: Callable[[], None] = lambda: None,
                  commit: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The CPU tier's body: build one candidate's extensions into ``root`` (the Volume) and commit.

    ``job``: ``source``, ``backend``, ``arch`` (TORCH_CUDA_ARCH_LIST for the GPUs that will load it),
    ``timeout_s``. Returns the outcome (``status`` ok / error / timeout / nobuild, ``cached``, ``key``,
    ``seconds``, ``error``, ``log_tail``) and, unless the build failed, the ``env`` the sandbox imports
    the candidate with."""
    import platform

    from kforge.runtime import build as B

    with contextlib.suppress(Exception):
        reload()  # another container may have built it already
    versions = {"torch": _dist_version("torch"), "cuda": _cuda_release(), "python": platform.python_version(),
                "platform": platform.machine()}
    arch = str(job.get("arch") or "") or None
    key = B.cache_key(str(job["source"]), str(job.get("backend") or ""), arch, versions)
    entry = root / key
    env = {"TORCH_EXTENSIONS_DIR": str(entry / "ext"), **({"TORCH_CUDA_ARCH_LIST": arch} if arch else {})}
    t0 = time.perf_counter()
    state, manifest, _ = B.read_entry(entry)
    if state in ("ok", "error"):
        outcome = dict(manifest or {}, cached=True)
    else:
        outcome = B.build_in_process({"source": job["source"], "entry": str(entry), "arch": arch,
                                      "versions": versions}, root, key, float(job.get("timeout_s") or 300.0))
        with contextlib.suppress(Exception):
            commit()  # the GPU containers reload() to see it
    outcome.update(key=key, seconds=round(time.perf_counter() - t0, 3), env=env)
    if outcome.get("status") == "nobuild":
        outcome["env"] = {k: v for k, v in env.items() if k != "TORCH_EXTENSIONS_DIR"}
    return outcome


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cuda_release() -> str | None:
    try:
        text = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"release ([\d.]+)", text)
    return found.group(1) if found else None


class ModalJudge:
    """The Modal class (decorated by :func:`build_app`): one judge per container, one candidate per call."""

    container: ContainerJudge

    @modal.enter()
    def start_judge(self) -> None:
        self.container = ContainerJudge.start(volume=_mounted_volume())

    @modal.method()
    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Judge one EvalRequest (as a dict); returns its EvalResult as a dict."""
        return self.container.evaluate(request)

    @modal.exit()
    def stop_judge(self) -> None:
        self.container.close()


def _mounted_volume() -> Any:
    """In a container: the run's Volume (named in the settings it was started with), for reload() and
    commit(); None outside a container or without a Volume."""
    name = json.loads(os.environ.get(ENV_SETTINGS) or "{}").get("volume")
    if modal.is_local() or not name:
        return None
    return modal.Volume.from_name(name)


class ModalBuilder:
    """The CPU tier (decorated by :func:`build_app` with no GPU): one candidate's build per call."""

    @modal.method()
    def build(self, job: dict[str, Any]) -> dict[str, Any]:
        volume = _mounted_volume()
        return run_build_job(job, Path(BUILDS_DIR), reload=volume.reload if volume is not None else lambda: None,
                             commit=volume.commit if volume is not None else lambda: None)


def build_image(spec: ImageSpec) -> modal.Image:
    """A CUDA devel base with Python, CUTLASS headers, pinned torch/triton/numpy/ninja, then kforge's source.

    Every package comes from PyPI (torch's PyPI wheel is the CUDA build, and pins its triton). With
    ``torch_index_url`` set, uv is told to pick the best version across both indexes
    (``--index-strategy unsafe-best-match``): by default uv takes a package from the first index that
    lists it at all, and torch's index carries a few numpy versions only."""
    image = modal.Image.from_registry(spec.base, add_python=spec.python)
    env = {"KFORGE_DEVICE": "cuda"}
    if spec.cutlass:
        image = image.apt_install("git").run_commands(
            f"git clone --depth 1 --branch v{spec.cutlass} https://github.com/NVIDIA/cutlass.git {CUTLASS_DIR}")
        env.update(CUTLASS_PATH=CUTLASS_DIR,
                   CPLUS_INCLUDE_PATH=f"{CUTLASS_DIR}/include:{CUTLASS_DIR}/tools/util/include")
    index = spec.index_options()
    image = image.uv_pip_install(*spec.requirements(), extra_index_url=index.get("extra_index_url"),
                                 extra_options=index.get("extra_options", ""))
    # last, so editing kforge never rebuilds the layers above
    return image.env(env).add_local_python_source(*spec.local_sources())


def class_options(settings: ModalSettings, gpu: str | list[str] | None = None) -> dict[str, Any]:
    """The ``@app.cls(...)`` arguments for the judge (on ``gpu``, default the pinned one): GPU, timeout,
    retries, cap, image, cache, memory limit, no network."""
    env: dict[str, str | None] = {ENV_SETTINGS: json.dumps(settings.container_record(), sort_keys=True)}
    volumes: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {}
    if settings.volume:
        volumes[CACHE_MOUNT] = modal.Volume.from_name(settings.volume, create_if_missing=True)
        env["TRITON_CACHE_DIR"] = f"{CACHE_MOUNT}/triton"
    return {
        "image": build_image(settings.image),
        "gpu": gpu if gpu is not None else settings.gpu_request(),
        # Per attempt, scheduling excluded; it restarts on each retry. The container's start (@modal.enter:
        # the judge, CUDA, the transport's self-test) has its own limit.
        "timeout": settings.timeout_s,
        "startup_timeout": settings.startup_timeout_s,
        # Modal retries an input when the function raises or times out; ours raises only when the judge
        # itself broke, so a candidate's own failure is never retried. A lost container is rescheduled
        # outside Retries: AttemptLedger bounds that.
        "retries": modal.Retries(max_retries=settings.retries, backoff_coefficient=2.0, initial_delay=1.0),
        "max_containers": settings.max_containers,
        "scaledown_window": settings.scaledown_window_s,
        "cpu": settings.cpu,
        # (request, limit): past the limit the container is killed, whatever the candidate allocated.
        "memory": (settings.memory_mib, settings.memory_limit_mib),
        # The judge and its sandboxes need no network: the Volume is mounted, inputs come through Modal.
        "block_network": settings.block_network,
        "volumes": volumes,
        "env": env,
    }


def builder_options(settings: ModalSettings) -> dict[str, Any]:
    """The ``@app.cls(...)`` arguments for the CPU build tier: no GPU, the same image and Volume."""
    opts = class_options(settings, gpu=None)
    opts.pop("gpu")
    opts.update(cpu=settings.build_cpu, memory=(settings.build_memory_mib, settings.build_memory_mib * 2),
                max_containers=settings.max_containers, retries=modal.Retries(max_retries=settings.retries,
                                                                             backoff_coefficient=2.0,
                                                                             initial_delay=1.0))
    return opts


def build_app(settings: ModalSettings) -> tuple[modal.App, Any]:
    """The App and its judge class for these settings (nothing is sent to Modal until it runs).

    The App also holds the CPU build tier (``ModalBuilder``, when a Volume holds its builds) and, with
    ``correctness_gpu``, a second judge class on that cheaper GPU; :func:`app_classes` returns all."""
    return _build(settings)[:2]


def app_classes(settings: ModalSettings) -> dict[str, Any]:
    """{"judge": cls, "builder": cls or None, "correctness": cls or None} of a fresh App, and "app"."""
    app, judge_cls, builder_cls, check_cls = _build(settings)
    return {"app": app, "judge": judge_cls, "builder": builder_cls, "correctness": check_cls}


def _build(settings: ModalSettings) -> tuple[modal.App, Any, Any, Any]:
    app = modal.App(settings.app_name)
    judge_cls = app.cls(**class_options(settings))(ModalJudge)
    builder_cls = app.cls(**builder_options(settings))(ModalBuilder) if settings.volume else None
    check_cls = None
    if settings.correctness_gpu:  # the same judge, under another name, on the cheaper GPU
        check_cls = app.cls(**class_options(settings, gpu=settings.correctness_gpu))(ModalCorrectnessJudge)
    return app, judge_cls, builder_cls, check_cls


class ModalCorrectnessJudge(ModalJudge):
    """The judge on ``correctness_gpu`` (decorated by :func:`build_app`): correctness only."""


@contextlib.contextmanager
def build_output(log_path: Path | None, quiet: bool = False) -> Iterator[None]:
    """Modal's output (the image build's log, the App's progress) while the block runs: to stderr, unless
    ``quiet``, and always into ``log_path``. ``modal.enable_output()`` prints to stdout, which is kforge's
    data stream; its console is pointed at stderr and the log instead (``RichOutputManager._console``
    in modal 1.6)."""
    from rich.console import Console

    log = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
    targets: list[Any] = ([] if quiet else [sys.stderr]) + ([log] if log is not None else [])

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            for t in targets:
                t.write(text)
            return len(text)

        def flush(self) -> None:
            for t in targets:
                t.flush()

        def isatty(self) -> bool:
            return not quiet and sys.stderr.isatty()

    try:
        with modal.enable_output():
            manager = modal.output.OutputManager.get()
            console = Console(file=cast(IO[str], Tee()), highlight=False, force_jupyter=False,
                              force_terminal=None if not quiet and sys.stderr.isatty() else False)
            for attr in ("_console", "_stderr_console"):
                if hasattr(manager, attr):
                    setattr(manager, attr, console)
            yield
    finally:
        if log is not None:
            log.close()
