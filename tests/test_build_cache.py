"""The compile stage: extensions built ahead of timing in CPU processes, into a content-hash cache.

A C++ ``load_inline`` extension (no CUDA) exercises the whole path on a CPU-only machine: the build
process compiles it into a cache entry; the sandbox then imports the candidate against that entry and
links the library without compiling again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from kforge.executors.local import LocalExecutor
from kforge.problems import builtin_problems
from kforge.runtime import build as B
from kforge.runtime import protocol as P

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="needs a C++ compiler")

# A C++ extension that includes pybind11 alone (no torch/extension.h, which takes ~30 s to compile on a
# 2-core machine: these tests build about ten extensions). The kernel works on raw pointers.
CPP_RELU = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

SRC = """
#include <pybind11/pybind11.h>
#include <cstdint>
void relu_fwd(std::int64_t src, std::int64_t dst, std::int64_t n) {
    const float* a = reinterpret_cast<const float*>(src);
    float* b = reinterpret_cast<float*>(dst);
    for (std::int64_t i = 0; i < n; ++i) b[i] = a[i] > 0.f ? a[i] : 0.f;   // TAG
}
"""
ext = load_inline(name="kf_test_relu_TAG", cpp_sources=SRC, functions=["relu_fwd"], verbose=False,
                  no_implicit_headers=True, with_pytorch_error_handling=False)


class ModelNew(nn.Module):
    def forward(self, x):
        xc = x.contiguous()
        y = torch.empty_like(xc)
        ext.relu_fwd(xc.data_ptr(), y.data_ptr(), xc.numel())
        return y
'''

BROKEN = CPP_RELU.replace("b[i] = a[i]", "b[i] = undeclared_thing + a[i]")


def _relu() -> object:
    return next(p for p in builtin_problems() if p.id == "relu")


def _request(source: str, rid: str, **kw) -> P.EvalRequest:
    prob = _relu()
    base = dict(request_id=rid, problem_id=prob.id, problem_source=prob.source, candidate_source=source,
                backend="cuda", shape_name="small", shape=prob.shapes["small"], trials=2, warmup=1,
                min_samples=0, compile_timeout_s=240, run_timeout_s=60, profile_check=False, ops_check=True)
    base.update(kw)
    return P.EvalRequest(**base)


def test_needs_build_spots_extension_imports() -> None:
    assert B.needs_build(CPP_RELU)
    assert B.needs_build("from torch.utils import cpp_extension\next = cpp_extension.load(name='x', sources=[])")
    triton_src = (Path(__file__).parents[1] / "src/kforge/problems/builtin/solutions/triton/relu.py").read_text()
    assert not B.needs_build(triton_src)


def test_cache_key_changes_with_what_the_build_depends_on() -> None:
    v = {"torch": "2.13.0", "cuda": "13.0", "python": "3.12.3", "platform": "linux"}
    k = B.cache_key("src", "cuda", "9.0a", v)
    assert k == B.cache_key("src", "cuda", "9.0a", dict(v))
    assert len({k, B.cache_key("src2", "cuda", "9.0a", v), B.cache_key("src", "cutlass", "9.0a", v),
                B.cache_key("src", "cuda", "8.0", v), B.cache_key("src", "cuda", "9.0a", dict(v, torch="2.11"))}) == 5


def test_compile_excerpt_keeps_the_error_lines() -> None:
    noise = "\n".join(f"[{i}/3] /usr/bin/c++ " + "-I/x " * 100 for i in range(3))
    text = noise + "\nmain.cpp:9:12: error: 'undeclared_thing' was not declared in this scope\n    9 | b[i] = x\n" \
        + "ninja: build stopped: subcommand failed.\n"
    out = B.compile_excerpt(text)
    assert "error: 'undeclared_thing' was not declared" in out
    assert "-I/x -I/x" not in out  # the echoed command lines are dropped
    assert len(B.compile_excerpt("error: x\n" * 5000, limit=500)) <= 500


def _executor(tmp_path: Path, workers: int = 2) -> LocalExecutor:
    ex = LocalExecutor(device="cpu", compile_workers=workers, cache_dir=str(tmp_path / "cache"))
    return ex


def test_prebuilt_candidate_is_judged_without_compiling_again(tmp_path: Path) -> None:
    src = CPP_RELU.replace("TAG", "a")

    async def go():
        ex = _executor(tmp_path)
        await ex.start(tmp_path / "logs")
        try:
            first = await ex.evaluate(_request(src, "r1"))
            entry = tmp_path / "cache" / B.list_entries(tmp_path / "cache")[0]["key"]
            so = next(entry.rglob("*.so"))
            mtime = so.stat().st_mtime_ns
            second = await ex.evaluate(_request(src, "r2"))
            return ex, first, second, entry, so, mtime
        finally:
            await ex.shutdown()

    ex, first, second, entry, so, mtime = asyncio.run(go())
    assert first.status == P.CORRECT, (first.error, first.log_tail)
    assert "prebuilt" in first.flags and first.durations_s["build"] > 0
    assert second.status == P.CORRECT and "build_cached" in second.flags
    assert B.read_entry(entry)[0] == "ok"
    # The sandbox linked what the build process made: the library was not rebuilt.
    assert so.stat().st_mtime_ns == mtime
    # Loading a prebuilt extension in the sandbox is much faster than building it was.
    assert first.durations_s["compile"] < first.durations_s["build"]
    assert ex.stats()["builds_built"] == 1 and ex.stats()["builds_cached"] == 1


def test_compile_error_comes_back_as_an_excerpt_without_a_judge(tmp_path: Path) -> None:
    src = BROKEN.replace("TAG", "b")

    async def go():
        ex = _executor(tmp_path)
        await ex.start()
        try:
            calls = []
            orig = ex._judge

            async def spy(worker, req):
                calls.append(req.request_id)
                return await orig(worker, req)
            ex._judge = spy  # type: ignore[method-assign]
            first = await ex.evaluate(_request(src, "b1"))
            again = await ex.evaluate(_request(src, "b2"))
            return first, again, calls
        finally:
            await ex.shutdown()

    first, again, calls = asyncio.run(go())
    assert calls == []  # decided by the compile stage: no judge (no GPU) time spent
    assert first.status == P.COMPILE_ERROR and first.guard == "compile"
    assert "undeclared_thing" in first.error and "error" in first.error
    assert len(first.error) <= 2500
    # A deterministic compile error is cached: the duplicate fails without building again.
    assert again.status == P.COMPILE_ERROR and "build_cached" in again.flags
    assert again.error == first.error


def test_corrupt_and_partial_entries_are_rebuilt_and_removal_is_per_entry(tmp_path: Path) -> None:
    srcs = [CPP_RELU.replace("TAG", t) for t in ("c", "d")]

    async def build_all(tag: str):  # the compile stage alone: judging what it built is the test above
        ex = _executor(tmp_path)
        await ex.start()
        try:
            # both at once: two compile workers (the CPU run's budget is tight; the order is not under test)
            built = await asyncio.gather(*(ex.prebuild(_request(s, f"{tag}{i}")) for i, s in enumerate(srcs)))
            return list(built), ex.stats()
        finally:
            await ex.shutdown()

    results, _ = asyncio.run(build_all("x"))
    assert all("result" not in r for r in results), results  # built, nothing decided
    root = tmp_path / "cache"
    keys = sorted(r["key"] for r in B.list_entries(root))
    assert len(keys) == 2
    # Corrupt one entry (a truncated library) and make the other partial (no manifest).
    so = next((root / keys[0]).rglob("*.so"))
    so.write_bytes(so.read_bytes()[:100])
    (root / keys[1] / B.MANIFEST).unlink()
    assert B.read_entry(root / keys[0])[0] == "corrupt" and "bytes" in B.read_entry(root / keys[0])[2]
    assert B.read_entry(root / keys[1])[0] == "corrupt"
    results, stats = asyncio.run(build_all("y"))
    assert all("result" not in r for r in results), results
    assert stats["builds_built"] == 2 and stats["builds_cached"] == 0
    assert all(B.read_entry(root / k)[0] == "ok" for k in keys)
    # Removing one entry leaves the other untouched.
    other = json.loads((root / keys[1] / B.MANIFEST).read_text())
    assert B.remove_entry(root, keys[0]) and not (root / keys[0]).exists()
    assert json.loads((root / keys[1] / B.MANIFEST).read_text()) == other
    assert [r["key"] for r in B.list_entries(root)] == [keys[1]]
    with pytest.raises(ValueError):
        B.remove_entry(root, "../etc")


def test_builds_run_in_parallel_and_time_out(tmp_path: Path) -> None:
    srcs = [CPP_RELU.replace("TAG", f"p{i}") for i in range(2)]
    slow = "import time\nfrom torch.utils.cpp_extension import load_inline\ntime.sleep(60)\n"

    async def go():
        ex = _executor(tmp_path, workers=3)
        await ex.start()
        try:
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(ex.prebuild(_request(s, f"p{i}")) for i, s in enumerate(srcs)),
                                        ex.prebuild(_request(slow, "slow", compile_timeout_s=3)))
            return outs, time.perf_counter() - t0
        finally:
            await ex.shutdown()

    outs, wall = asyncio.run(go())
    a, b, slow_out = outs
    assert "result" not in a and "result" not in b
    # Two builds side by side take less than the two one after the other.
    assert wall < a["seconds"] + b["seconds"] - 1.0 or wall < 0.8 * (a["seconds"] + b["seconds"])
    res = slow_out["result"]
    assert res.status == P.TIMEOUT and res.guard == "compile_timeout"
    assert "compile_timeout_s=3" in res.error


def test_builds_run_at_a_lower_cpu_priority(tmp_path: Path) -> None:
    """The build process (what the compile pool runs per candidate) lowers its own priority, and so that
    of the compilers it starts, by KFORGE_BUILD_NICE (default 10); 0 leaves it as it was."""
    import os
    import subprocess
    import sys

    report = "import os\nfrom torch.utils.cpp_extension import load_inline\nraise SystemExit(f'NICE={os.nice(0)}')\n"
    procs = {}
    for step in ("", "0", "3"):
        req = tmp_path / f"req{step or 'default'}.json"
        req.write_text(json.dumps({"source": report, "entry": str(tmp_path / "cache" / f"e{step}"), "arch": None,
                                   "result": str(req.with_suffix(".result.json")), "versions": {}}))
        env = dict(os.environ, **{B.BUILD_NICE_ENV: step})
        procs[step] = (req, subprocess.Popen([sys.executable, "-m", "kforge.runtime.build", str(req)], env=env))
    here = os.nice(0)
    seen = {}
    for step, (req, proc) in procs.items():
        assert proc.wait(timeout=120) == 0
        out = json.loads(req.with_suffix(".result.json").read_text())
        assert out["status"] == "nobuild"
        seen[step] = int(out["error"].rsplit("NICE=", 1)[1].split()[0].strip("'\")"))
    assert seen == {"": min(here + 10, 19), "0": here, "3": min(here + 3, 19)}


def test_cache_cli_lists_and_removes_one_entry(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kforge.cli import cli

    root = tmp_path / "c"
    for key, status in (("a" * 32, "ok"), ("b" * 32, "error")):
        entry = root / key
        (entry / "ext" / "x").mkdir(parents=True)
        if status == "ok":
            (entry / "ext" / "x" / "x.so").write_bytes(b"\x7fELF" + b"0" * 100)
        B.write_manifest(entry, status, {"extensions": ["x"], "error": "e" if status == "error" else None})
    (root / ("c" * 32)).mkdir()  # partial: no manifest
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "list", "--dir", str(root), "--json"])
    assert out.exit_code == 0, out.output
    states = {r["key"][0]: r["state"] for r in json.loads(out.output)}
    assert states == {"a": "ok", "b": "error", "c": "corrupt"}
    out = runner.invoke(cli, ["cache", "rm", "b" * 32, "--dir", str(root)])
    assert out.exit_code == 0 and "removed 1 entry" in out.output
    assert (root / ("a" * 32)).exists() and not (root / ("b" * 32)).exists()
    out = runner.invoke(cli, ["cache", "rm", "d" * 32, "--dir", str(root)])
    assert out.exit_code != 0 and "no such entries" in out.output
    out = runner.invoke(cli, ["cache", "list", "--dir", str(root)])
    assert "corrupt" in out.output and "no manifest" in out.output


CUDA_RELU = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA = """
#include <torch/extension.h>
__global__ void relu_kernel(const float* __restrict__ x, float* __restrict__ y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}
torch::Tensor relu_fwd(torch::Tensor x) {
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    long n = xc.numel();
    relu_kernel<<<(n + 255) / 256, 256>>>(xc.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
ext = load_inline(name="kf_test_cuda_relu", cpp_sources="torch::Tensor relu_fwd(torch::Tensor x);",
                  cuda_sources=CUDA, functions=["relu_fwd"], verbose=False)


class ModelNew(nn.Module):
    def forward(self, x):
        return ext.relu_fwd(x)
'''


@pytest.mark.gpu
def test_cuda_candidate_is_built_for_the_device_arch_on_the_cpu_and_only_linked_on_the_gpu(tmp_path: Path) -> None:
    async def go():
        ex = LocalExecutor(device="cuda", compile_workers=2, cache_dir=str(tmp_path / "cache"))
        await ex.start(tmp_path / "logs")
        try:
            return ex.device_info, [await ex.evaluate(_request(CUDA_RELU, f"g{i}", profile_check=True))
                                    for i in range(2)]
        finally:
            await ex.shutdown()

    info, (first, second) = asyncio.run(go())
    assert info["cuda_arch"].endswith("a") or int(info["sm"]) < 90
    assert first.status == P.CORRECT, (first.error, first.log_tail)
    assert second.status == P.CORRECT and "build_cached" in second.flags
    assert any("relu_kernel" in k for k in first.kernels)
    key = B.list_entries(tmp_path / "cache")[0]["key"]
    ninja = next((tmp_path / "cache" / key).rglob("build.ninja")).read_text()
    arch = info["cuda_arch"].replace(".", "")
    assert f"sm_{arch}" in ninja or f"compute_{arch}" in ninja
    # Building took tens of seconds on the CPU; the sandbox only linked the library.
    assert first.durations_s["compile"] < 15
    print("build", first.durations_s["build"], "sandbox import", first.durations_s["compile"],
          "second import", second.durations_s["compile"])
