"""EvalRequest and EvalResult: plain, versioned, JSON-serialisable data (standard library only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROTOCOL_VERSION = 1

CORRECT = "correct"
INCORRECT = "incorrect"
COMPILE_ERROR = "compile_error"
RUNTIME_ERROR = "runtime_error"
TIMEOUT = "timeout"
REJECTED = "rejected"
INFRA_ERROR = "infra_error"  # kforge or the machine failed, not the candidate
STATUSES = (CORRECT, INCORRECT, COMPILE_ERROR, RUNTIME_ERROR, TIMEOUT, REJECTED, INFRA_ERROR)


@dataclass
class EvalRequest:
    request_id: str
    problem_id: str
    problem_source: str
    candidate_source: str
    backend: str = "triton"
    loader: str = "python-module"
    shape_name: str = "small"
    shape: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    atol: float | None = None
    rtol: float | None = None
    trials: int = 5
    warmup: int = 3
    min_samples: int = 10
    max_samples: int = 100
    max_timing_s: float = 10.0
    target_rel_se: float = 0.005
    flush_l2: bool = True
    compile_timeout_s: float = 300.0
    run_timeout_s: float = 60.0
    init_seed: int = 0
    flops: float | None = None
    bytes: float | None = None
    compile_modes: list[str] = field(default_factory=list)  # torch.compile baselines, e.g. ["default"]
    heldout: list[dict[str, Any]] = field(default_factory=list)  # extra shapes judged for correctness only
    heldout_trials: int = 2
    inplace: bool = False  # the operator writes its inputs: no input-mutation check
    profile_check: bool = True  # on CUDA: the profiler must see a kernel defined in the candidate
    ops_check: bool = True  # reject a forward that runs every compute op of the reference
    aa_tolerance: float = 0.01
    # Time by CUDA-graph replay (both sides) when the faster side's warm-up median is under this (ms);
    # 0: never. Above it, plain calls with a device-wide synchronisation inside the timed region.
    cuda_graph_below_ms: float = 0.1
    # The baseline's math modes: "pytorch" (PyTorch's defaults, as users and KernelBench's timers run it:
    # cuDNN may use TF32) or "exact" (none, as the correctness reference always computes).
    baseline_math: str = "pytorch"
    # Set by the executor's compile stage: environment for the sandbox's import (TORCH_EXTENSIONS_DIR
    # pointing at a prebuilt cache entry, TORCH_CUDA_ARCH_LIST), so load_inline finds its build done.
    build_env: dict[str, str] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRequest:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TimingStats:
    median_ms: float
    p20_ms: float
    p80_ms: float
    mean_ms: float
    cv: float
    rel_se: float
    n: int
    samples_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    request_id: str
    problem_id: str
    status: str
    error: str | None = None
    guard: str | None = None  # which check decided a failure
    log_tail: str | None = None
    trials_run: int = 0
    trials_passed: int = 0
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    mismatch: str | None = None
    timing: dict[str, Any] | None = None  # candidate TimingStats as a dict
    baseline_eager: dict[str, Any] | None = None
    baseline_compile: dict[str, Any] | None = None  # mode -> TimingStats dict
    aa_ratio: float | None = None  # the baseline against itself, interleaved: ~1.0 on a quiet GPU
    kernels: list[str] = field(default_factory=list)  # what the profiler saw the candidate launch
    speedup_vs_eager: float | None = None
    speedup_vs_compile: float | None = None
    roofline_floor_ms: float | None = None
    roofline_fraction: float | None = None
    timing_method: str | None = None
    baseline_math: str | None = None  # the math modes the baselines were timed in (flags and values)
    device: str | None = None
    device_kind: str | None = None  # "cuda" or "cpu"
    versions: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    distributions: list[str] = field(default_factory=list)
    durations_s: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    shape_name: str | None = None
    # Where the judge's time and memory went (per sandbox command: calls, round trip, busy; peak GPU
    # memory of judge and sandbox). For finding bottlenecks; never part of a verdict.
    diagnostics: dict[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    @property
    def speedup(self) -> float | None:
        return self.speedup_vs_eager if self.status == CORRECT else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speedup"] = self.speedup
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
