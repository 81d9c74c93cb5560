"""The static checker (kforge.checks): every rule fires on what it forbids and stays quiet on legitimate code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kforge.checks import FIXES, RULES, WARNING_RULES, CheckResult, Violation, check_candidate

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "src" / "kforge" / "problems" / "builtin" / "solutions"
QUICKSTART = REPO / "recipes" / "quickstart" / "candidates"

TEMPLATE = '''\
import torch
import torch.nn as nn
import triton
import triton.language as tl
{imports}


@triton.jit
def relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=offs < n)


{module}


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
{init}

    def forward(self, x):
        y = torch.empty_like(x)
{body}
        relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
'''


def _indent(code: str, spaces: int) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * spaces) if code.strip() else " " * spaces + "pass"


def candidate(imports: str = "", module: str = "", init: str = "", body: str = "") -> str:
    """A legitimate Triton ReLU candidate with extra code spliced in."""
    return TEMPLATE.format(imports=textwrap.dedent(imports).strip(), module=textwrap.dedent(module).strip(),
                           init=_indent(init, 8), body=_indent(body, 8))


def rules(code: str, backend: str = "triton") -> set[str]:
    return {v.rule for v in check_candidate(code, backend)}


CUDA_SRC = r'''
CUDA_SRC = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void relu_kernel(const float* x, float* y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

torch::Tensor relu_cuda(torch::Tensor x) {
    auto y = torch::empty_like(x);
    int64_t n = x.numel();
    relu_kernel<<<(n + 255) / 256, 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<float>(), y.data_ptr<float>(), n);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) { printf("%s\n", cudaGetErrorString(err)); exit(1); }  // error handling
    return y;
}
/*EXTRA*/
"""
'''


def cuda_candidate(extra_cuda: str = "", build: str = "", forward: str = "return ext.relu_cuda(x.contiguous())",
                   imports: str = "") -> str:
    return textwrap.dedent(f'''\
        import os
        import torch
        import torch.nn as nn
        from torch.utils.cpp_extension import load_inline
        {imports}
        ''') + CUDA_SRC.replace("/*EXTRA*/", extra_cuda) + textwrap.dedent(f'''
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        ext = load_inline(name="relu_ext", cpp_sources="torch::Tensor relu_cuda(torch::Tensor x);",
                          cuda_sources=CUDA_SRC, functions=["relu_cuda"]{build})


        class ModelNew(nn.Module):
            def forward(self, x):
                {forward}
        ''')


# -- legitimate code passes --------------------------------------------------------------------
LEGIT_FILES = sorted(SOLUTIONS.glob("*/*.py")) + sorted(
    f for f in QUICKSTART.glob("*/*.py") if f.name != "syntax_error.py")


@pytest.mark.parametrize("path", LEGIT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_solutions_and_quickstart_candidates_pass(path: Path) -> None:
    backend = path.parent.name if path.is_relative_to(SOLUTIONS) else "triton"
    result = check_candidate(path.read_text(), backend)
    assert list(result) == [], [str(v) for v in result]
    assert result.warnings == [], [str(w) for w in result.warnings]


def test_there_are_solutions_to_check() -> None:
    assert len(list(SOLUTIONS.glob("triton/*.py"))) >= 6


def test_the_template_itself_is_clean() -> None:
    assert rules(candidate()) == set()


GOOD = {
    "os-environ": dict(imports="import os", module="""
        os.environ["TRITON_PRINT_AUTOTUNING"] = "0"
        DEBUG = os.environ.get("KFORGE_DEBUG") or os.getenv("X", "")
        HERE = os.path.join(os.path.dirname("a/b"), "c")
        CORES = os.cpu_count()"""),
    "except-pass-and-raise": dict(body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except RuntimeError as exc:
            print("kernel failed", exc)
            raise
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except ValueError:
            pass"""),
    "retry-smaller-blocks": dict(body="""
        for block in (4096, 1024):
            try:
                relu_kernel[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), BLOCK=block)
                break
            except Exception:
                continue"""),
    "allocation-views-and-glue": dict(body="""
        x = x.contiguous().view(-1).reshape(x.shape)
        z = torch.zeros(4, device=x.device); o = torch.ones_like(z); f = torch.full((2,), 1.0)
        n_rows, n_cols = x.shape if x.dim() == 2 else (1, x.numel())
        ptr = x.data_ptr()
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        s = torch.cuda.current_stream() if torch.cuda.is_available() else None"""),
    "torch-backends-switch": dict(module="""
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False"""),
    "instance-and-local-state": dict(module="CACHE = {}\nCACHE['k'] = 1", init="""
        self.block = 1024
        self.weight = nn.Parameter(torch.randn(4))
        self.register_buffer("scale", torch.ones(1))"""),
    "words-in-strings-and-comments": dict(module='''
        # gc, inspect, sys.modules, open(), os.system, torch.cuda.Stream, threading: just words here
        NOTE = "we never import gc or call open(); torch.cuda.Stream is not used"
        DOC = """cudaStreamCreate and std::thread are mentioned in prose only"""'''),
    "logging-and-warnings": dict(imports="import logging\nimport warnings", body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except RuntimeError:
            logging.getLogger(__name__).exception("launch failed")
            warnings.warn("launch failed")
            raise"""),
    "harmless-stdlib": dict(imports="import math\nimport functools\nimport itertools\nimport sys\nimport numpy as np",
                            module="""
        BLOCKS = [2 ** i for i in range(4, 12)]
        PROD = math.prod([1, 2]) + int(np.prod([1, 2]))
        PY = sys.version_info >= (3, 10)
        print("loaded", file=sys.stderr)"""),
    "attributes-of-own-objects": dict(module="""
        class _Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.block = 1024
                return x

        def configure(buf, meta):
            buf.requires_grad = False
            meta.block = 128

        for dt in (torch.float16, torch.float32):
            BY_DTYPE = {dt: 1}
        configure(torch.empty(1), _Fn)""", init="""
        self.buf = torch.empty(4)
        self.buf.requires_grad = False
        self.cache = {torch.float32: None}
        self.cache[torch.float32] = 1"""),
    "parameters-named-like-builtins": dict(module="""
        def helper(input, open=None, compile=False):
            return input"""),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_legitimate_patterns_pass(name: str) -> None:
    code = candidate(**GOOD[name])
    result = check_candidate(code)
    assert list(result) == [], [str(v) for v in result]


LAUNCH_SHAPES = {
    "helper-function": '''
        def launch(x, y):
            relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)

        class ModelNew(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                launch(x, y)
                return y
        ''',
    "autograd-function": '''
        class _Relu(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = torch.empty_like(x)
                grid = lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),)
                relu_kernel[grid](x, y, x.numel(), BLOCK=1024)
                return y

        class ModelNew(nn.Module):
            def forward(self, x):
                return _Relu.apply(x)
        ''',
    "submodule-and-inheritance": '''
        class Op(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
                return y

        class Base(nn.Module):
            def __init__(self):
                super().__init__()
                self.op = Op()

            def forward(self, x):
                return self.op(x)

        class ModelNew(Base):
            pass
        ''',
    "method-helper-and-kernel-alias": '''
        KERNELS = {"relu": relu_kernel}

        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                self.kernel = relu_kernel

            def _run(self, x, y):
                launcher = self.kernel[(triton.cdiv(x.numel(), 1024),)]
                launcher(x, y, x.numel(), BLOCK=1024)
                KERNELS["relu"][(1,)](x, y, x.numel(), BLOCK=1024)

            def forward(self, x):
                y = torch.empty_like(x)
                self._run(x, y)
                return y
        ''',
    "jit-call-form-and-autotune": '''
        def _impl(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)

        impl = triton.jit(_impl)

        @triton.autotune(configs=[triton.Config({"BLOCK": 128})], key=["n"])
        @triton.jit
        def tuned(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            pass

        class ModelNew(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                impl[(1,)](x, y, x.numel(), BLOCK=1024)
                tuned[lambda meta: (1,)](x, y, x.numel())
                return y
        ''',
    "kernel-passed-to-a-launcher": '''
        def launch(kernel, x, y, block=1024):
            kernel[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), BLOCK=block)

        class ModelNew(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                launch(relu_kernel, x, y)
                return y
        ''',
    "wrap-triton-and-run": '''
        class ModelNew(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                torch.library.wrap_triton(relu_kernel)[(1,)](x, y, x.numel(), BLOCK=1024)
                relu_kernel.run(x, y, x.numel(), BLOCK=1024, grid=(1,), warmup=False)
                return y
        ''',
}

TRITON_HEADER = '''\
import functools
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)
'''


@pytest.mark.parametrize("name", sorted(LAUNCH_SHAPES))
def test_launch_is_found_through_helpers(name: str) -> None:
    code = TRITON_HEADER + textwrap.dedent(LAUNCH_SHAPES[name])
    result = check_candidate(code)
    assert list(result) == [], [str(v) for v in result]


def test_cuda_candidate_with_error_handling_and_env_passes() -> None:
    result = check_candidate(cuda_candidate(), "cuda")
    assert list(result) == [], [str(v) for v in result]


def test_cuda_lazy_loader_and_try_around_compilation_pass() -> None:
    code = textwrap.dedent('''\
        import functools
        import torch
        import torch.nn as nn
        import torch.utils.cpp_extension

        SRC = """
        __global__ void k(float* y) { y[threadIdx.x] = 0.f; }
        torch::Tensor run(torch::Tensor x) { auto y = torch::empty_like(x); k<<<1, 32>>>(y.data_ptr<float>()); return y; }
        """


        @functools.lru_cache(None)
        def _ext():
            try:
                return torch.utils.cpp_extension.load_inline(
                    "e", cpp_sources="torch::Tensor run(torch::Tensor x);", cuda_sources=SRC, functions=["run"])
            except Exception as exc:
                raise RuntimeError("compilation failed") from exc


        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                try:
                    self.ext = _ext()
                except RuntimeError:
                    self.ext = None

            def forward(self, x):
                return self.ext.run(x)
        ''')
    result = check_candidate(code, "cuda")
    assert list(result) == [], [str(v) for v in result]


def test_cuda_through_torch_ops_passes() -> None:
    code = cuda_candidate(build=", is_python_module=False", forward="return torch.ops.relu_ext.relu_cuda(x)")
    assert rules(code, "cuda") == set()


def test_cutlass_include_or_cute_dsl_passes() -> None:
    code = cuda_candidate(extra_cuda="#include <cutlass/cutlass.h>").replace("__global__ void relu_kernel",
                                                                            "__device__ void relu_kernel")
    assert "__global__" not in code
    assert rules(code, "cutlass") == set()
    assert rules(code, "cuda") == {"needs-kernel"}
    cute = textwrap.dedent('''\
        import torch
        import torch.nn as nn
        import cutlass.cute as cute


        @cute.kernel
        def relu_kernel(x, y):
            pass


        @cute.jit
        def launch(x, y):
            relu_kernel(x, y).launch(grid=[1, 1, 1], block=[128, 1, 1])


        class ModelNew(nn.Module):
            def forward(self, x):
                y = torch.empty_like(x)
                compiled = cute.compile(launch, x, y)
                compiled(x, y)
                return y
        ''')
    assert rules(cute, "cutlass") == set()


def test_syntax_error_is_left_to_the_sandbox() -> None:
    assert check_candidate("def broken(:\n    pass\n") == []
    assert check_candidate((QUICKSTART / "relu" / "syntax_error.py").read_text()) == []


def test_unknown_backend_gets_only_the_backend_independent_rules() -> None:
    code = "import gc\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n"
    assert rules(code, "someplugin") == {"no-gc"}
    assert rules(code, "triton") == {"no-gc", "needs-kernel"}


# -- each rule fires -------------------------------------------------------------------------
BAD: list[tuple[str, dict[str, str], str]] = [
    # no-gc
    ("gc-import", dict(imports="import gc"), "no-gc"),
    ("gc-from-import", dict(imports="from gc import get_objects"), "no-gc"),
    ("gc-via-dunder-import", dict(body="__import__('gc').get_objects()"), "no-gc"),
    ("subclasses", dict(body="object.__subclasses__()"), "no-gc"),
    # no-frames
    ("inspect", dict(imports="import inspect", body="inspect.currentframe()"), "no-frames"),
    ("sys-getframe", dict(imports="import sys", body="sys._getframe(1).f_locals"), "no-frames"),
    ("frame-from-traceback", dict(body="""
        try:
            raise ValueError
        except ValueError as exc:
            frame = exc.__traceback__.tb_frame.f_back"""), "no-frames"),
    ("sys-modules", dict(imports="import sys", body="mod = sys.modules['__main__']"), "no-frames"),
    ("function-globals", dict(body="g = self.forward.__globals__"), "no-frames"),
    ("settrace", dict(imports="import sys", module="sys.settrace(None)"), "no-frames"),
    ("traceback-walk", dict(imports="import traceback", body="traceback.walk_stack(None)"), "no-frames"),
    ("dunder-name-in-string", dict(body="getattr(self.forward, '__globals__')"), "no-frames"),
    # no-patching
    ("time-perf-counter", dict(imports="import time", module="time.perf_counter = lambda: 0.0"), "no-patching"),
    ("aliased-module", dict(imports="import time as clock", module="clock.perf_counter = lambda: 0.0"), "no-patching"),
    ("from-imported-class", dict(imports="from torch.cuda import Event",
                                 module="Event.elapsed_time = lambda self, other: 0.001"), "no-patching"),
    ("alias-of-attribute", dict(module="E = torch.cuda.Event\nE.elapsed_time = lambda self, other: 0.001"),
     "no-patching"),
    ("torch-allclose", dict(module="torch.allclose = lambda *a, **k: True"), "no-patching"),
    ("triton-do-bench", dict(module="triton.testing.do_bench = lambda *a, **k: 0.0"), "no-patching"),
    ("nn-module-call", dict(module="nn.Module.__call__ = lambda self, *a: None"), "no-patching"),
    ("augmented", dict(module="torch.cuda.synchronize += None"), "no-patching"),
    ("delete", dict(module="del torch.cuda.synchronize"), "no-patching"),
    ("setattr-module", dict(imports="import time", module="setattr(time, 'perf_counter', lambda: 0.0)"),
     "no-patching"),
    ("delattr-module", dict(module="delattr(torch.cuda, 'synchronize')"), "no-patching"),
    ("builtins-module", dict(imports="import builtins", module="builtins.print = lambda *a, **k: None"),
     "no-patching"),
    ("dunder-builtins", dict(module="__builtins__['print'] = None"), "no-patching"),
    ("sys-stdout", dict(imports="import sys", module="sys.stdout = None"), "no-patching"),
    ("importlib-reload", dict(imports="import importlib\nimport time", module="importlib.reload(time)"),
     "no-patching"),
    ("vars-of-module", dict(module="vars(torch)['relu'] = None"), "no-patching"),
    ("module-dict", dict(module="torch.__dict__['relu'] = None"), "no-patching"),
    ("dunder-on-object", dict(body="y.__call__ = None"), "no-patching"),
    ("type-of-object", dict(body="type(y).add = None"), "no-patching"),
    ("override-aten", dict(module="LIB = torch.library.Library('aten', 'IMPL')"), "no-patching"),
    ("through-a-helper", dict(module="""
        def patch(obj, value):
            obj.elapsed_time = value

        patch(torch.cuda.Event, lambda self, other: 0.001)"""), "no-patching"),
    ("through-a-helper-setattr", dict(imports="import time", module="""
        def patch(obj, name, value):
            setattr(obj, name, value)

        patch(time, "perf_counter", lambda: 0.0)"""), "no-patching"),
    ("through-a-default-argument", dict(module="""
        def patch(obj=torch.cuda.Event):
            obj.__dict__["elapsed_time"] = None

        patch()"""), "no-patching"),
    ("through-a-container", dict(module="[torch.cuda.Event][0].elapsed_time = lambda self, other: 0.001"),
     "no-patching"),
    ("through-a-loop", dict(imports="import time", module="""
        for mod in (time,):
            mod.perf_counter = lambda: 0.0"""), "no-patching"),
    # no-streams
    ("cuda-stream", dict(init="self.s = torch.cuda.Stream()"), "no-streams"),
    ("stream-context", dict(body="""
        with torch.cuda.stream(torch.cuda.current_stream()):
            pass"""), "no-streams"),
    ("stream-from-import", dict(imports="from torch.cuda import Stream as S", init="self.s = S()"), "no-streams"),
    ("stream-getattr", dict(body="getattr(torch.cuda, 'Stream')()"), "no-streams"),
    ("external-stream", dict(body="torch.cuda.ExternalStream(0)"), "no-streams"),
    ("torch-stream", dict(body="torch.Stream()"), "no-streams"),
    # no-threads
    ("threading", dict(imports="import threading"), "no-threads"),
    ("thread-pool", dict(imports="from concurrent.futures import ThreadPoolExecutor"), "no-threads"),
    ("asyncio", dict(imports="import asyncio"), "no-threads"),
    ("multiprocessing", dict(imports="import multiprocessing as mp"), "no-threads"),
    ("torch-multiprocessing", dict(imports="import torch.multiprocessing"), "no-threads"),
    ("low-level-thread", dict(imports="import _thread"), "no-threads"),
    ("jit-fork", dict(body="torch.jit.fork(print)"), "no-threads"),
    # no-ctypes
    ("ctypes", dict(imports="import ctypes"), "no-ctypes"),
    ("ctypes-from", dict(imports="from ctypes import CDLL"), "no-ctypes"),
    ("cffi", dict(imports="import cffi"), "no-ctypes"),
    ("cuda-python", dict(imports="from cuda import cuda"), "no-ctypes"),
    ("cudart", dict(body="torch.cuda.cudart().cudaProfilerStop()"), "no-ctypes"),
    ("torch-private-bindings", dict(body="torch._C._cuda_getCurrentRawStream(0)"), "no-ctypes"),
    # no-files
    ("open", dict(body="open('/tmp/answers', 'w').write('x')"), "no-files"),
    ("open-via-builtins", dict(imports="import builtins", body="builtins.open('/proc/self/maps')"), "no-files"),
    ("pathlib", dict(imports="from pathlib import Path", body="Path('/tmp/x').write_text('1')"), "no-files"),
    ("shutil", dict(imports="import shutil"), "no-files"),
    ("tempfile", dict(imports="import tempfile"), "no-files"),
    ("os-write-fd", dict(imports="import os", body="os.write(1, b'{}')"), "no-files"),
    ("os-listdir", dict(imports="import os", body="os.listdir('/proc/self/fd')"), "no-files"),
    ("os-path-exists", dict(imports="import os", body="os.path.exists('/tmp/x')"), "no-files"),
    ("os-dup2", dict(imports="from os import dup2", body="dup2(1, 2)"), "no-files"),
    ("os-alias", dict(imports="import os", module="o = os\no.remove('/tmp/x')"), "no-files"),
    ("torch-save", dict(body="torch.save(y, '/tmp/y.pt')"), "no-files"),
    ("torch-load", dict(body="torch.load('/tmp/y.pt')"), "no-files"),
    ("tofile", dict(body="x.numpy().tofile('/tmp/x.bin')"), "no-files"),
    ("numpy-save", dict(imports="import numpy as np", body="np.save('/tmp/x.npy', x.numpy())"), "no-files"),
    # no-network
    ("urllib", dict(imports="import urllib.request"), "no-network"),
    ("socket", dict(imports="import socket"), "no-network"),
    ("requests", dict(imports="import requests"), "no-network"),
    ("http-client", dict(imports="from http.client import HTTPConnection"), "no-network"),
    ("torch-hub", dict(body="torch.hub.load('a/b', 'c')"), "no-network"),
    # no-process-control
    ("os-exit", dict(imports="import os", body="os._exit(0)"), "no-process-control"),
    ("os-abort", dict(imports="import os", body="os.abort()"), "no-process-control"),
    ("os-system", dict(imports="import os", body="os.system('nvidia-smi')"), "no-process-control"),
    ("os-kill", dict(imports="import os", body="os.kill(os.getppid(), 9)"), "no-process-control"),
    ("os-fork", dict(imports="import os", body="os.fork()"), "no-process-control"),
    ("os-exec", dict(imports="import os", body="os.execv('/bin/true', ['true'])"), "no-process-control"),
    ("from-os-import-system", dict(imports="from os import system"), "no-process-control"),
    ("subprocess", dict(imports="import subprocess"), "no-process-control"),
    ("signal", dict(imports="import signal", module="signal.signal(signal.SIGTERM, signal.SIG_IGN)"),
     "no-process-control"),
    ("posix-module", dict(imports="import posix", body="posix._exit(0)"), "no-process-control"),
    # no-tensor-subclass
    ("tensor-subclass", dict(module="class Lazy(torch.Tensor):\n    pass"), "no-tensor-subclass"),
    ("tensor-subclass-from-import", dict(imports="from torch import Tensor", module="class Lazy(Tensor):\n    pass"),
     "no-tensor-subclass"),
    ("parameter-subclass", dict(module="class P(nn.Parameter):\n    pass"), "no-tensor-subclass"),
    ("torch-function", dict(module="""
        class Wrapper:
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                return func(*args, **(kwargs or {}))"""), "no-tensor-subclass"),
    ("torch-dispatch", dict(module="""
        class Mode:
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return None"""), "no-tensor-subclass"),
    ("dispatch-mode", dict(imports="from torch.utils._python_dispatch import TorchDispatchMode"),
     "no-tensor-subclass"),
    ("wrapper-subclass", dict(body="torch.Tensor._make_wrapper_subclass(object, (1,))"), "no-tensor-subclass"),
    ("class-swap", dict(body="y.__class__ = type(y)"), "no-tensor-subclass"),
    # no-harness
    ("import-kforge", dict(imports="import kforge"), "no-harness"),
    ("from-kforge", dict(imports="from kforge.runtime import timing"), "no-harness"),
    ("main-module", dict(imports="import __main__"), "no-harness"),
    ("sys-argv", dict(imports="import sys", body="fd = int(sys.argv[2])"), "no-harness"),
    # no-dynamic-code
    ("exec", dict(module="exec('x = 1')"), "no-dynamic-code"),
    ("eval", dict(body="eval('1 + 1')"), "no-dynamic-code"),
    ("compile", dict(module="CODE = compile('1', 'f', 'eval')"), "no-dynamic-code"),
    ("dunder-import", dict(body="__import__('math')"), "no-dynamic-code"),
    ("importlib", dict(imports="import importlib", body="importlib.import_module('math')"), "no-dynamic-code"),
    ("computed-getattr", dict(body="getattr(torch, 'rel' + 'u')(x)"), "no-dynamic-code"),
    ("globals", dict(body="globals()['relu_kernel']"), "no-dynamic-code"),
    ("pickle", dict(imports="import pickle"), "no-dynamic-code"),
    # no-seed
    ("initial-seed", dict(module="SEED = torch.initial_seed()"), "no-seed"),
    ("cuda-initial-seed", dict(body="torch.cuda.initial_seed()"), "no-seed"),
    ("rng-state", dict(module="STATE = torch.get_rng_state()"), "no-seed"),
    ("default-generator", dict(body="torch.default_generator.initial_seed()"), "no-seed"),
    ("generator-method", dict(body="torch.Generator().initial_seed()"), "no-seed"),
    ("python-random-state", dict(imports="import random", module="STATE = random.getstate()"), "no-seed"),
    ("numpy-random-state", dict(imports="import numpy as np", module="STATE = np.random.get_state()"), "no-seed"),
    # no-reference
    ("call-reference", dict(module="""
        class Model(nn.Module):
            def forward(self, x):
                return torch.relu(x)""", init="self.ref = Model()"), "no-reference"),
    ("import-reference", dict(imports="from reference import Model"), "no-reference"),
    ("reference-attribute", dict(imports="import reference", body="reference.Model()(x)"), "no-reference"),
    # no-fallback
    ("except-returns-torch", dict(body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except Exception:
            return torch.relu(x)"""), "no-fallback"),
    ("except-computes", dict(body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except Exception:
            y = x.clamp(min=0)"""), "no-fallback"),
    ("bare-except-returns", dict(body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        except:  # noqa: E722
            return y"""), "no-fallback"),
    ("finally-returns", dict(body="""
        try:
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
        finally:
            return torch.relu(x)"""), "no-fallback"),
    ("suppress", dict(imports="import contextlib", body="""
        with contextlib.suppress(Exception):
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)
            return y"""), "no-fallback"),
    ("through-a-helper", dict(module="""
        def launch(x, y):
            relu_kernel[(1,)](x, y, x.numel(), BLOCK=1024)""", body="""
        try:
            launch(x, y)
        except RuntimeError:
            return torch.nn.functional.relu(x)"""), "no-fallback"),
]


@pytest.mark.parametrize(("name", "parts", "rule"), BAD, ids=[b[0] for b in BAD])
def test_rule_fires(name: str, parts: dict[str, str], rule: str) -> None:
    code = candidate(**parts)
    found = check_candidate(code)
    assert rule in {v.rule for v in found}, (code, [str(v) for v in found])


def test_every_rule_is_exercised() -> None:
    exercised = {rule for _, _, rule in BAD} | {"needs-model-new", "needs-kernel", "needs-launch"}
    assert exercised == set(RULES)


CXX_BAD = [  # (id, C++ added to the CUDA source, rule, text on the line the violation names)
    ("cudaStreamCreate", "cudaStream_t s; void mk() { cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); }",
     "no-streams", "cudaStreamCreateWithFlags"),
    ("stream-pool", "void mk() { auto s = at::cuda::getStreamFromPool(); }", "no-streams", "getStreamFromPool"),
    ("std-thread", "void mk() { std::thread t([]{}); t.detach(); }", "no-threads", "std::thread"),
    ("fopen", 'void mk() { FILE* f = fopen("/tmp/x", "w"); }', "no-files", "fopen"),
    ("write-fd", 'void mk() { write(1, "x", 1); }', "no-files", "write(1"),
    ("system", 'void mk() { system("nvidia-smi"); }', "no-process-control", "system("),
    ("dlsym", 'void* mk() { return dlsym(RTLD_NEXT, "cuEventElapsedTime"); }', "no-ctypes", "dlsym"),
    ("interpose", 'extern "C" cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {\n'
                  "    *ms = 0.001f; return cudaSuccess;\n}", "no-patching", "cudaEventElapsedTime"),
    ("socket", "int mk() { return socket(2, 1, 0); }", "no-network", "socket("),
]


@pytest.mark.parametrize(("name", "cxx", "rule", "token"), CXX_BAD, ids=[c[0] for c in CXX_BAD])
def test_cuda_source_rules(name: str, cxx: str, rule: str, token: str) -> None:
    code = cuda_candidate(extra_cuda=cxx)
    found = [v for v in check_candidate(code, "cuda") if v.rule == rule]
    assert found, [str(v) for v in check_candidate(code, "cuda")]
    assert token in code.splitlines()[found[0].line - 1]


def test_cuda_comments_are_not_code() -> None:
    code = cuda_candidate(extra_cuda="// we do not call cudaStreamCreate or fopen here\n/* nor system() */")
    assert rules(code, "cuda") == set()


def test_load_inline_build_directory_is_rejected() -> None:
    assert "no-files" in rules(cuda_candidate(build=", build_directory='/tmp/ext'"), "cuda")


# -- structure: ModelNew, kernel, launch ---------------------------------------------------------
def test_needs_model_new() -> None:
    code = candidate().replace("class ModelNew(", "class MyModel(")
    found = check_candidate(code)
    assert [v.rule for v in found] == ["needs-model-new"]
    assert "class ModelNew(nn.Module)" in found[0].message


def test_model_new_alias_of_a_class_is_accepted() -> None:
    code = candidate().replace("class ModelNew(", "class Impl(") + "\n\nModelNew = Impl\n"
    assert rules(code) == set()
    assert rules(candidate() + "\n\nModelNew = make_model()\n") == {"needs-model-new"}


def test_needs_kernel_triton() -> None:
    code = candidate().replace("@triton.jit\n", "")
    assert "needs-kernel" in rules(code)
    not_triton = candidate().replace("import triton\n", "import numba as triton\n", 1)
    assert "needs-kernel" in rules(not_triton)


def test_needs_kernel_cuda() -> None:
    assert rules(candidate(), "cuda") == {"needs-kernel"}  # a Triton candidate is no CUDA candidate
    no_global = cuda_candidate().replace("__global__", "__device__")
    found = check_candidate(no_global, "cuda")
    assert [v.rule for v in found] == ["needs-kernel"] and "__global__" in found[0].message
    not_compiled = cuda_candidate().replace("ext = load_inline(", "ext = dict(").replace(
        "return ext.relu_cuda(x.contiguous())", "return x")
    found = check_candidate(not_compiled, "cuda")
    assert [v.rule for v in found] == ["needs-kernel"] and "load_inline" in found[0].message


def test_needs_launch() -> None:
    never = candidate().replace("        relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)\n", "")
    found = check_candidate(never)
    assert [v.rule for v in found] == ["needs-launch"]
    assert found[0].line == never.splitlines().index("    def forward(self, x):") + 1
    # launched only at import time, or only from a function forward never calls: still not launched by forward
    at_import = never + "\n\nrelu_kernel[(1,)](torch.ones(4), torch.ones(4), 4, BLOCK=4)\n"
    assert rules(at_import) == {"needs-launch"}
    unused_helper = never + "\n\ndef unused(x, y):\n    relu_kernel[(1,)](x, y, 4, BLOCK=4)\n"
    assert rules(unused_helper) == {"needs-launch"}
    # an alias of the kernel that is never called
    aliased = never.replace("        y = torch.empty_like(x)\n", "        y = torch.empty_like(x)\n        k = relu_kernel\n")
    assert rules(aliased) == {"needs-launch"}
    # handing the kernel to a helper that does not launch it is no launch either
    passed = never + "\n\ndef keep(k):\n    return None\n"
    passed = passed.replace("        y = torch.empty_like(x)\n", "        y = torch.empty_like(x)\n        keep(relu_kernel)\n")
    assert rules(passed) == {"needs-launch"}
    cuda_never = cuda_candidate(forward="return torch.relu(x)")
    assert rules(cuda_never, "cuda") == {"needs-launch"}


def test_needs_launch_without_forward() -> None:
    code = candidate().replace("def forward(self, x):", "def run(self, x):")
    found = check_candidate(code)
    assert [v.rule for v in found] == ["needs-launch"] and "no forward" in found[0].message


def test_subclassing_model_is_reported_at_the_class() -> None:
    code = candidate(module="class Model(nn.Module):\n    pass").replace("class ModelNew(nn.Module)",
                                                                           "class ModelNew(Model)")
    found = [v for v in check_candidate(code) if v.rule == "no-reference"]
    assert found and "subclasses the reference Model" in found[0].message
    assert code.splitlines()[found[0].line - 1].startswith("class ModelNew(Model)")


# -- reporting --------------------------------------------------------------------------------
def test_violation_format_and_line() -> None:
    code = candidate(imports="import gc")
    found = check_candidate(code)
    assert isinstance(found, CheckResult) and isinstance(found, list)
    (v,) = found
    assert isinstance(v, Violation)
    assert v.line == code.splitlines().index("import gc") + 1
    assert str(v).startswith(f"rule no-gc (line {v.line}): imports gc")
    assert v.to_dict() == {"rule": "no-gc", "line": v.line, "message": v.message}
    assert str(Violation("needs-kernel", None, "x")) == "rule needs-kernel: x"


def test_every_message_says_what_to_do() -> None:
    for _, parts, _rule in BAD:
        for v in check_candidate(candidate(**parts)):
            assert v.rule in RULES, str(v)
            if v.rule in FIXES:
                assert v.message.endswith(FIXES[v.rule]), str(v)
            else:  # the structural rules say what to write instead, inline
                assert any(w in v.message for w in ("define", "launch", "let ", "write", "call ")), str(v)


def test_one_report_per_rule_and_line() -> None:
    code = candidate(imports="import gc", body="gc.collect(); gc.get_objects()")
    found = [v for v in check_candidate(code) if v.rule == "no-gc"]
    assert len(found) == 2 and len({v.line for v in found}) == 2


# -- warnings --------------------------------------------------------------------------------
def test_library_ops_in_forward_are_warnings_not_violations() -> None:
    code = candidate(imports="import torch.nn.functional as F", init="self.proj = nn.Linear(4, 4)", body="""
        a = torch.softmax(x, dim=-1)
        b = F.gelu(x) + x.sum(1, keepdim=True)
        c = x @ x.T
        d = self.proj(x)""")
    result = check_candidate(code)
    assert list(result) == []
    assert set(WARNING_RULES) == {w.rule for w in result.warnings}
    text = "\n".join(map(str, result.warnings))
    for what in ("torch.softmax", "torch.nn.functional.gelu", ".sum()", "@ operator", "self.proj (torch.nn.Linear)"):
        assert what in text, text


def test_torch_ops_outside_forward_are_not_warned() -> None:
    code = candidate(init="self.w = torch.softmax(torch.randn(4), 0)",
                     module="def unused(x):\n    return torch.matmul(x, x)")
    result = check_candidate(code)
    assert list(result) == [] and result.warnings == []
