"""Timing primitives shared by the judge (baseline) and the sandbox (candidate), and statistics.

Statistics are only ever computed in the judge, from raw samples.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


class Timer:
    """Times one call on a device. On CUDA, in the order of triton.testing.do_bench and KernelBench's
    cuda_event timer: the L2 flush, then the start event, the call and the end event on the current
    stream, with no host synchronisation in between, so the host's launch latency hides behind the flush
    instead of being counted. Then a device-wide synchronisation and a ``done`` event: ``last_tail_ms``
    (done - end) is how long work on any stream outlasted the end event plus the host's round trip, which
    the judge compares between the candidate and the baseline (work hidden on a side stream shows there).
    On the CPU: perf_counter around the call."""

    def __init__(self, device: torch.device, flush_l2: bool = True) -> None:
        self.device = device
        self.flush_buffer = None
        self.last_tail_ms: float | None = None
        if device.type == "cuda" and flush_l2:
            props = torch.cuda.get_device_properties(device)
            l2 = int(getattr(props, "L2_cache_size", 0) or 0) or (50 << 20)
            # At least twice the L2, so nothing of the previous call survives in it.
            self.flush_buffer = torch.empty(max(2 * l2, 64 << 20) // 4, dtype=torch.int32, device=device)

    @property
    def method(self) -> str:
        return self.describe(graph=False)

    def describe(self, graph: bool) -> str:
        if self.device.type == "cuda":
            flush = "l2-flush(2x L2)" if self.flush_buffer is not None else "warm-cache"
            return f"cuda-graph replay between cuda-events, {flush}" if graph else \
                f"cuda-events (do_bench order) + device-sync tail check, {flush}"
        return "cpu-wall-clock (perf_counter), Triton interpreter"

    def time_call(self, fn: Callable[..., Any], args: Sequence[Any]) -> tuple[float, Any]:
        if self.device.type == "cuda":
            return self._events_around(lambda: fn(*args), sync_inside=True)
        t0 = time.perf_counter()
        out = fn(*args)
        return (time.perf_counter() - t0) * 1e3, out

    def time_graph(self, graph: Any, out: Any) -> tuple[float, Any]:
        """Times one replay of a captured CUDA graph: the same L2 flush, CUDA events around the replay
        alone. No Python runs inside the timed region and nothing but the captured kernels can run
        (every stream a capture forks must rejoin it), so no device-wide synchronisation is needed
        inside it; one follows it, so nothing overlaps the next sample. The replay is launched while
        the flush runs, so its launch latency is not counted either."""
        return self._events_around(graph.replay, sync_inside=False)[0], out

    def _events_around(self, call: Callable[[], Any], sync_inside: bool) -> tuple[float, Any]:
        torch.cuda.synchronize(self.device)  # the previous sample's work has ended
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        # Both a plain call and a graph replay are launched while the flush runs: the start is stamped
        # when the flush ends and the host's launch latency is hidden (as do_bench and KernelBench's
        # cuda_event timer do); without a flush it is counted.
        if self.flush_buffer is not None:
            self.flush_buffer.zero_()
        start.record()
        out = call()
        end.record()
        if sync_inside:
            # A plain call may have launched work on another stream: wait for the whole device, then
            # stamp ``done``. Its distance from ``end`` is the host's round trip, plus any work that
            # outlasted the call on another stream (the judge compares it with the baseline's).
            done = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            done.record()
            done.synchronize()
            self.last_tail_ms = float(end.elapsed_time(done))
            return float(start.elapsed_time(end)), out
        end.synchronize()
        torch.cuda.synchronize(self.device)  # nothing of this sample overlaps the next
        return float(start.elapsed_time(end)), out

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def capture_graph(fn: Callable[..., Any], args: Sequence[Any], device: torch.device, warmup: int = 2) -> tuple[Any, Any]:
    """One call of ``fn(*args)`` captured as a CUDA graph: (graph, its output, which each replay
    rewrites in place). Warmed up on a side stream first, as PyTorch asks (lazy initialisation, cuBLAS
    workspaces). Raises whatever the capture raised: the caller falls back to timing plain calls."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(warmup):
            fn(*args)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = fn(*args)
    torch.cuda.synchronize(device)
    return graph, out


def summarise(samples_ms: Sequence[float]) -> dict[str, Any]:
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    med = statistics.median(xs)
    mean = statistics.fmean(xs)
    sd = statistics.stdev(xs) if n > 1 else 0.0
    # standard error of the median, approximated as 1.253 * sd / sqrt(n)
    rel_se = (1.2533 * sd / math.sqrt(n)) / med if med > 0 else math.inf
    return {
        "median_ms": med, "p20_ms": _quantile(xs, 0.2), "p80_ms": _quantile(xs, 0.8), "mean_ms": mean,
        "cv": sd / mean if mean > 0 else 0.0, "rel_se": rel_se, "n": n, "samples_ms": list(samples_ms),
    }


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)
