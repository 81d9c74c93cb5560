"""Static checks on a candidate's source, before anything runs (EVALUATION.md, "Static checks").

``check_candidate(code, backend)`` parses the candidate (it never imports or runs it) and returns the
rules it breaks, each with a stable rule id, the line, and what to change. It works on the syntax
tree, resolving names through the candidate's imports (``import torch.cuda as tc; tc.Stream()`` is
``torch.cuda.Stream``), so ordinary code is not rejected for a word in a comment or a string.

A static check is one layer, not the whole defence: a determined candidate can hide almost anything
from an AST scan (strings assembled at run time, C++ it compiles). The judge's run-time guards
(poisoned outputs, input snapshots, fresh inputs, the wall-clock cross-check) are what decide; this
module rejects the exploits that are visible in the source early, cheaply and with a clear message.

Standard library only: the orchestrator runs it without torch.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

__all__ = ["FIXES", "RULES", "WARNING_RULES", "CheckResult", "Violation", "check_candidate"]

# Rule ids are stable: stores, recipes and tests refer to them. ``needs-*`` rules state what a
# candidate must contain; ``no-*`` rules what it must not do.
RULES: dict[str, str] = {
    "needs-model-new": "the candidate defines class ModelNew at module level",
    "needs-kernel": "the candidate contains a kernel in the backend's language",
    "needs-launch": "ModelNew.forward launches the candidate's own kernel (directly or through its helpers)",
    "no-fallback": "no try/except (or suppress/finally) around a kernel launch that returns or computes another result",
    "no-reference": "the reference Model is not imported, called or subclassed",
    "no-patching": "torch, triton, timers, builtins and other modules are not modified",
    "no-streams": "no CUDA streams of its own",
    "no-threads": "no threads, processes, async tasks or forks",
    "no-gc": "no walking the garbage collector or the class graph",
    "no-frames": "no stack frames, function globals, sys.modules or tracing hooks",
    "no-ctypes": "no ctypes/cffi or other raw access to the driver or torch's private C bindings",
    "no-files": "no file or file-descriptor access",
    "no-network": "no network access",
    "no-process-control": "no exiting, killing, forking or running other programs",
    "no-tensor-subclass": "outputs are plain tensors: no Tensor subclasses, __torch_function__/__torch_dispatch__",
    "no-harness": "no access to kforge, the judge's process arguments or the __main__ module",
    "no-dynamic-code": "no exec/eval/compile, __import__, importlib or computed attribute names on modules",
    "no-seed": "no reading the random number generators' seeds or states",
}
# Reported as warnings (``CheckResult.warnings``), never as rejections: whether a PyTorch op does the
# main computation or only glue can't be judged from the source.
WARNING_RULES: dict[str, str] = {
    "library-op": "forward calls a PyTorch op that can compute the whole answer",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"rule {self.rule}{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class CheckResult(list[Violation]):
    """The violations (a list: empty means the candidate may run), plus ``warnings``."""

    def __init__(self, violations: Iterable[Violation] = (), warnings: Iterable[Violation] = ()) -> None:
        super().__init__(violations)
        self.warnings: list[Violation] = list(warnings)


# What to do instead: appended to each message of these rules (the others say it inline).
FIXES: dict[str, str] = {
    "no-patching": "Compute the result in your kernel; do not modify modules, timers or the harness.",
    "no-streams": "Launch on the current stream (the default); the judge times the device.",
    "no-threads": "Do all the work synchronously inside forward.",
    "no-gc": "Use only forward's arguments and your module's parameters.",
    "no-frames": "Use only forward's arguments and your module's parameters.",
    "no-ctypes": "Launch kernels through Triton or load_inline only.",
    "no-files": "Keep everything in memory; kernels come from source strings in the candidate.",
    "no-network": "The candidate must be self-contained.",
    "no-process-control": "Let forward return its result; errors should raise exceptions.",
    "no-tensor-subclass": "Return plain torch.Tensor outputs that already hold the result.",
    "no-harness": "A candidate only defines kernels and ModelNew.",
    "no-dynamic-code": "Write the code out literally.",
    "no-seed": "Inputs are drawn from seeds the candidate cannot know; compute from the inputs.",
}

# -- what each rule matches ---------------------------------------------------------------------
# Qualified names (after resolving imports and aliases), matched on dotted-prefix boundaries: an
# entry "gc" matches "gc" and "gc.get_objects". The longest matching entry wins.
_NAMES: dict[str, tuple[str, str]] = {}


def _ban(rule: str, why: str, *names: str) -> None:
    for name in names:
        _NAMES[name] = (rule, why)


_ban("no-gc", "walks the garbage collector's objects", "gc", "objgraph", "guppy", "pympler")
_ban("no-frames", "inspects stack frames and other functions' variables", "inspect")
_ban("no-frames", "reads stack frames", "sys._getframe", "sys._current_frames", "traceback.walk_stack",
     "traceback.extract_stack", "traceback.format_stack", "traceback.print_stack", "traceback.walk_tb",
     "traceback.StackSummary")
_ban("no-frames", "installs a tracing or profiling hook", "sys.settrace", "sys.setprofile", "threading.settrace",
     "sys.addaudithook", "sys.monitoring")
_ban("no-frames", "reaches other modules through the module table", "sys.modules", "sys.meta_path",
     "sys.path_hooks", "sys.path_importer_cache")
_ban("no-harness", "reads the judge's process arguments", "sys.argv", "sys.orig_argv")
_ban("no-harness", "reaches the harness", "kforge", "__main__")
_ban("no-threads", "starts threads or processes", "threading", "_thread", "multiprocessing", "concurrent",
     "asyncio", "torch.multiprocessing", "torch.jit.fork", "torch.jit._fork", "torch.futures")
_ban("no-streams", "creates or switches CUDA streams", "torch.cuda.Stream", "torch.cuda.stream",
     "torch.cuda.ExternalStream", "torch.cuda.set_stream", "torch.cuda.StreamContext", "torch.cuda.streams",
     "torch.Stream")
_ban("no-ctypes", "reaches the driver or native code directly", "ctypes", "_ctypes", "cffi", "pycuda", "cuda",
     "cupy", "numba", "torch.cuda.cudart", "torch.ops.load_library", "torch.classes.load_library")
_ban("no-ctypes", "uses torch's private C bindings", "torch._C")
_ban("no-process-control", "controls processes", "subprocess", "signal", "pty", "resource", "faulthandler")
_ban("no-network", "uses the network", "socket", "ssl", "urllib", "urllib3", "http", "requests", "httpx",
     "aiohttp", "ftplib", "smtplib", "telnetlib", "xmlrpc", "websocket", "websockets", "paramiko", "torch.hub",
     "webbrowser")
_ban("no-files", "touches files", "builtins.open", "io.open", "io.FileIO", "io.open_code", "codecs.open",
     "pathlib", "shutil", "tempfile", "glob", "fileinput", "shelve", "sqlite3", "mmap", "zipfile", "tarfile",
     "dbm", "torch.load", "torch.save", "torch.from_file",
     "numpy.load", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.fromfile", "numpy.memmap",
     "numpy.loadtxt", "numpy.savetxt", "numpy.genfromtxt", "numpy.lib.format")
_ban("no-dynamic-code", "runs code built at run time", "builtins.exec", "builtins.eval", "builtins.compile",
     "builtins.__import__", "importlib", "runpy", "code", "codeop", "marshal", "types.CodeType",
     "types.FunctionType", "pickle", "dill", "cloudpickle", "builtins.globals")
_ban("no-patching", "reloads modules", "importlib.reload")
_ban("no-patching", "reaches the builtins module's namespace", "builtins.__dict__")
_ban("no-patching", "overrides operators", "torch.library.Library", "torch.library.fallthrough_kernel")
_ban("no-tensor-subclass", "hooks tensor dispatch", "torch.utils._python_dispatch", "torch.overrides.TorchFunctionMode",
     "torch.Tensor._make_subclass", "torch.Tensor._make_wrapper_subclass", "torch._C.TensorBase",
     "torch.Tensor.__torch_function__", "torch.Tensor.__torch_dispatch__")
_ban("no-seed", "reads the random number generator's seed or state", "torch.initial_seed",
     "torch.random.initial_seed", "torch.cuda.initial_seed", "torch.cuda.random.initial_seed",
     "torch.get_rng_state", "torch.random.get_rng_state", "torch.cuda.get_rng_state",
     "torch.cuda.get_rng_state_all", "torch.cuda.random.get_rng_state", "torch.default_generator",
     "torch.random.default_generator", "torch.cuda.default_generators", "random.getstate",
     "numpy.random.get_state", "numpy.random.get_bit_generator")

# os: reading the environment and string-only path helpers are fine; process control and anything
# that touches files or descriptors are not.
_OS_SAFE = {"environ", "getenv", "putenv", "unsetenv", "cpu_count", "sched_getaffinity", "getpid", "sep", "linesep",
            "pathsep", "name", "curdir", "pardir", "extsep", "altsep", "fspath", "fsencode", "fsdecode", "PathLike",
            "path.join", "path.basename", "path.dirname", "path.splitext", "path.split", "path.normpath",
            "path.isabs", "path.sep", "path.commonprefix", "path.splitdrive", "path.pathsep", "path.extsep",
            "path.curdir", "path.pardir"}
_OS_PROCESS = re.compile(r"^(_exit|abort|kill|killpg|fork|forkpty|system|popen|exec\w*|spawn\w*|posix_spawn\w*|"
                         r"setsid|setpgid|setpgrp|wait\w*|pidfd_\w+|register_at_fork|nice|setuid|setgid|"
                         r"setresuid|setresgid|sched_setaffinity)$")

# Attribute names that mean the same thing whatever object they are read from.
_ATTRS: dict[str, tuple[str, str]] = {
    "f_back": ("no-frames", "walks stack frames"), "f_globals": ("no-frames", "reads a frame's globals"),
    "f_locals": ("no-frames", "reads a frame's locals"), "f_builtins": ("no-frames", "reads a frame's builtins"),
    "tb_frame": ("no-frames", "reaches a stack frame from a traceback"),
    "gi_frame": ("no-frames", "reaches a generator's frame"), "cr_frame": ("no-frames", "reaches a coroutine's frame"),
    "ag_frame": ("no-frames", "reaches a generator's frame"),
    "__globals__": ("no-frames", "reads a function's globals"), "__code__": ("no-frames", "reads or swaps a function's code"),
    "__closure__": ("no-frames", "reads a function's closure"),
    "__subclasses__": ("no-gc", "walks the class graph (every class in the process)"),
    "__builtins__": ("no-patching", "reaches the builtins namespace"),
    "initial_seed": ("no-seed", "reads a generator's seed"),
    "__torch_function__": ("no-tensor-subclass", "hooks tensor dispatch"),
    "__torch_dispatch__": ("no-tensor-subclass", "hooks tensor dispatch"),
    "_make_subclass": ("no-tensor-subclass", "makes a Tensor subclass"),
    "_make_wrapper_subclass": ("no-tensor-subclass", "makes a Tensor subclass"),
    "tofile": ("no-files", "writes a file"),
}
_STRING_ATTRS = {k for k in _ATTRS if k.startswith("__") or k.startswith("f_") or k.endswith("_frame")}

_TENSOR_BASES = {"torch.Tensor", "torch._C.TensorBase", "torch._C._TensorBase", "torch.nn.Parameter",
                 "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer", "torch.nn.Buffer"}

# Allowed to set: global switches of torch's own libraries, which a candidate's kernels don't go through.
_PATCH_OK_PREFIXES = ("torch.backends.",)

# C/C++ source strings (load_inline): patterns, after comments are removed.
_CXX_HINTS = ("#include", "__global__", "__device__", "torch::", "at::", "PYBIND11")
_CXX_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"\b(cudaStreamCreate\w*|cuStreamCreate\w*|getStreamFromPool|getStreamFromExternal|"
                r"setCurrentCUDAStream|cudaStreamPerThread|cudaStreamBeginCapture)\b"),
     "no-streams", "creates or switches CUDA streams in C++ ({0})"),
    (re.compile(r"\b(std::thread|std::jthread|std::async|pthread_create)\b|#\s*include\s*<(thread|future|pthread\.h)>"),
     "no-threads", "starts threads in C++ ({0})"),
    (re.compile(r"\b(fopen|freopen|fdopen|ofstream|ifstream|fstream|opendir|mkstemp|unlink)\b|"
                r"#\s*include\s*<(fstream|fcntl\.h|dirent\.h|filesystem|sys/mman\.h)>|"
                r"\b(open|openat|creat|dup|dup2|mmap)\s*\(|"
                r"\b(write|pwrite)\s*\(\s*(\d+|STDOUT_FILENO|STDERR_FILENO|fd\w*)\s*,"),
     "no-files", "touches files or descriptors in C++ ({0})"),
    (re.compile(r"\b(system|popen|fork|vfork|execv\w*|execl\w*|kill|posix_spawn\w*)\s*\("),
     "no-process-control", "runs or signals processes in C++ ({0})"),
    (re.compile(r"\b(dlopen|dlsym|dlvsym|cuGetProcAddress\w*|cudaGetDriverEntryPoint\w*)\b|(LD_PRELOAD)|"
                r"#\s*include\s*<(dlfcn\.h)>"),
     "no-ctypes", "loads driver or library symbols at run time in C++ ({0})"),
    (re.compile(r"\b(socket|getaddrinfo|curl_easy_init)\s*\(|#\s*include\s*<(sys/socket\.h|netdb\.h)>"),
     "no-network", "uses the network in C++ ({0})"),
    # A definition (not a call) of a CUDA runtime/driver entry point: symbol interposition on the timer.
    (re.compile(r'(?m)^[ \t]*(?:extern\s+"C"\s+)?(?:[\w:<>]+[ \t*&]+)+'
                r"(cu(?:da)?(?:Event\w*|Stream\w*|Device\w*|Launch\w*|Memcpy\w*|Memset\w*|Malloc\w*|Free\w*|"
                r"Graph\w*|GetLastError|PeekAtLastError|Ctx\w*|Init|Profiler\w*))\s*\([^;{}()]*\)\s*\{"),
     "no-patching", "defines {0}, a CUDA runtime/driver function, which would interpose on the real one"),
]
_CXX_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)

# Warnings: PyTorch calls that can compute a whole answer.
_LIB_OPS = {
    "matmul", "mm", "bmm", "addmm", "addmv", "addbmm", "baddbmm", "mv", "einsum", "tensordot", "inner", "outer",
    "dot", "chain_matmul", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "softmax", "log_softmax", "softmin", "relu", "relu_", "relu6", "gelu", "silu", "sigmoid",
    "tanh", "elu", "selu", "leaky_relu", "hardtanh", "softplus", "mish", "layer_norm", "group_norm", "batch_norm",
    "instance_norm", "rms_norm", "local_response_norm", "normalize", "sum", "mean", "var", "std", "var_mean",
    "std_mean", "norm", "cumsum", "cumprod", "logsumexp", "prod", "amax", "amin", "max_pool1d", "max_pool2d",
    "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "scaled_dot_product_attention", "cross_entropy",
    "nll_loss", "mse_loss", "l1_loss", "kl_div", "linear", "bilinear", "embedding", "cdist", "cosine_similarity",
    "pairwise_distance", "triu", "tril", "sort", "topk", "argsort", "compile",
}
_LIB_NAMESPACES = ("torch.", "torch.nn.functional.", "torch.special.", "torch.linalg.", "torch.fft.")
_LIB_MODULES = {
    "Linear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "LayerNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "RMSNorm", "Softmax", "LogSoftmax", "ReLU", "GELU", "SiLU", "Sigmoid", "Tanh",
    "MultiheadAttention", "Transformer", "TransformerEncoderLayer", "LSTM", "GRU", "RNN", "Embedding",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "Sequential",
}
# What a fallback handler may do without computing a result.
_HANDLER_OK_CALLS = {"builtins.print", "builtins.str", "builtins.repr", "builtins.len", "builtins.isinstance",
                     "builtins.type", "builtins.format", "builtins.RuntimeError", "builtins.ValueError",
                     "builtins.TypeError", "builtins.Exception", "builtins.AssertionError",
                     "builtins.NotImplementedError", "warnings.warn", "torch.empty", "torch.empty_like",
                     "torch.empty_strided", "torch.cuda.synchronize", "torch.cuda.empty_cache"}
_LOGGING = re.compile(r"^(logging|logger|log|_log|_logger|LOG|LOGGER)\.")

_BUILTIN_NAMES = set(vars(builtins))


def check_candidate(code: str, backend: str = "triton") -> CheckResult:
    """Check a candidate's source for ``backend`` ("triton", "cuda", "cutlass"; any other name gets only
    the backend-independent rules). Returns the violations (empty: it may run), with ``.warnings``.

    Source that does not parse gives no violations: the sandbox reports it as a compile error with
    the line, which tells a generator more than a rejection would.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return CheckResult()
    return _Checker(tree, backend.lower()).run()


# -- helpers -----------------------------------------------------------------------------------
def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _last(name: str | None) -> str:
    return name.rsplit(".", 1)[-1] if name else ""


def _matches(qual: str, entry: str) -> bool:
    return qual == entry or qual.startswith(entry + ".")


class _Checker:
    def __init__(self, tree: ast.Module, backend: str) -> None:
        self.tree = tree
        self.backend = backend
        self.violations: list[Violation] = []
        self.warnings: list[Violation] = []
        self._seen: set[tuple[str, int | None]] = set()
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.imports: dict[str, str] = {}  # local name -> qualified name
        self.aliases: dict[str, str] = {}  # local name -> qualified name (x = torch.cuda.Event)
        self.bound: set[str] = set()  # every name the candidate binds (so `open` may be its own)
        self.tainted: set[str] = set()  # names bound to something that holds modules or their members
        self._launching_names: set[str] | None = None
        self._methods_by_name: dict[str, list[ast.AST]] | None = None
        self._instance_attrs: dict[str, set[str]] | None = None
        self._callee_cache: dict[ast.AST, list[ast.AST]] | None = None
        self._direct_launch: dict[ast.AST, bool] = {}
        self._module_functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {
            n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self._methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {
            m.name: m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self._collect_names()

    # -- names -------------------------------------------------------------------------------
    def _collect_names(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.imports[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        self.imports[root] = root
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                for a in node.names:
                    if a.name != "*":
                        self.imports[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(node.name)
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.bound.add(node.id)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bound.add(node.name)
        # x = torch.cuda.Event; o = os: names bound to a module path (never to a call's result).
        for _ in range(3):
            for node in ast.walk(self.tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    qual = self.resolve(node.value)
                    if qual:
                        for t in targets:
                            if isinstance(t, ast.Name) and t.id not in self.imports:
                                self.aliases[t.id] = qual
        # Names bound to containers or choices of such things (`for m in [torch.cuda.Event]`,
        # `a = (time, 0)[0]`): not one qualified name, but still modules or their members.
        for _ in range(3):
            for node in ast.walk(self.tree):
                value: ast.AST | None = None
                targets = []
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                    value = node.value
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                elif isinstance(node, (ast.For, ast.comprehension)):
                    value, targets = node.iter, [node.target]
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    value, targets = node.context_expr, [node.optional_vars]
                if value is not None and self._mentions_rooted(value):
                    for t in targets:
                        self.tainted.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))

    def resolve(self, node: ast.AST) -> str | None:
        """The qualified name an expression stands for (``tc.Stream`` -> ``torch.cuda.Stream``), or None."""
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return self._normalise(self.imports[node.id])
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id == "__builtins__":
                return "builtins"
            if node.id in _BUILTIN_NAMES and node.id not in self.bound:
                return f"builtins.{node.id}"
            return None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return self._normalise(f"{base}.{node.attr}") if base else None
        if isinstance(node, ast.Call) and self._is_builtin(node.func, "getattr") and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                base = self.resolve(node.args[0])
                return self._normalise(f"{base}.{name.value}") if base else None
        if isinstance(node, ast.Call) and self._is_builtin(node.func, "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return self._normalise(arg.value.split(".")[0])
        return None

    @staticmethod
    def _normalise(qual: str) -> str:
        root, _, rest = qual.partition(".")
        if root in ("posix", "nt"):
            root = "os"
        elif root == "np":
            root = "numpy"
        return f"{root}.{rest}" if rest else root

    def _is_builtin(self, func: ast.AST, name: str) -> bool:
        return isinstance(func, ast.Name) and func.id == name and name not in self.bound and name not in self.imports

    def _rooted(self, node: ast.AST) -> bool:
        """Whether an expression is (or holds) a module or something imported, not a local object."""
        return self.resolve(node) is not None or self._mentions_rooted(node)

    def _mentions_rooted(self, expr: ast.AST) -> bool:
        """Whether evaluating ``expr`` can yield a module or one of its members: it mentions one outside
        a call (a call's result is a new object) and outside an index (``d[torch.float32]`` is a key)."""
        todo = [expr]
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.Call, ast.Lambda, ast.Constant)):
                continue
            if isinstance(node, ast.Name):
                if self.resolve(node) is not None or node.id in self.tainted:
                    return True
                continue
            if isinstance(node, ast.Attribute):
                if self.resolve(node) is not None:
                    return True
                todo.append(node.value)
                continue
            if isinstance(node, ast.Subscript):
                todo.append(node.value)
                continue
            if isinstance(node, (ast.BoolOp, ast.IfExp, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Starred,
                                 ast.NamedExpr, ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                if isinstance(node, ast.IfExp):
                    todo += [node.body, node.orelse]
                elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
                    todo.append(node.elt)
                elif isinstance(node, ast.DictComp):
                    todo.append(node.value)
                elif isinstance(node, ast.Dict):
                    todo += [v for v in node.values if v is not None]
                else:
                    todo += list(ast.iter_child_nodes(node))
        return False

    # -- reporting ---------------------------------------------------------------------------
    def report(self, rule: str, where: ast.AST | int | None, message: str) -> None:
        line = where if isinstance(where, int) or where is None else getattr(where, "lineno", None)
        if (rule, line) in self._seen:
            return
        self._seen.add((rule, line))
        fix = FIXES.get(rule)
        self.violations.append(Violation(rule, line, f"{message}. {fix}" if fix else message))

    def warn(self, rule: str, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", None)
        if any(w.rule == rule and w.line == line and w.message == message for w in self.warnings):
            return
        self.warnings.append(Violation(rule, line, message))

    def run(self) -> CheckResult:
        self._scan_names()
        self._scan_statements()
        self._scan_cxx_strings()
        self._check_structure()
        self.violations.sort(key=lambda v: (v.line or 0, v.rule))
        self.warnings.sort(key=lambda v: (v.line or 0, v.rule))
        return CheckResult(self.violations, self.warnings)

    # -- banned names, attributes and imports -----------------------------------------------------
    def _banned(self, qual: str) -> tuple[str, str, str] | None:
        best: tuple[str, str, str] | None = None
        for entry, (rule, why) in _NAMES.items():
            if _matches(qual, entry) and (best is None or len(entry) > len(best[2])):
                best = (rule, why, entry)
        if best is None and (qual == "os" or qual.startswith("os.")):
            sub = qual[3:]
            if sub and sub not in _OS_SAFE and not any(sub.startswith(s + ".") for s in _OS_SAFE):
                head = sub.split(".")[0]
                if _OS_PROCESS.match(head):
                    return "no-process-control", "controls processes", f"os.{head}"
                if sub != "path":
                    return "no-files", "touches files or file descriptors", f"os.{sub}"
        return best

    def _scan_names(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self._check_qual(self._normalise(a.name), node, imported=True)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mod = self._normalise(node.module)
                if not self._check_qual(mod, node, imported=True):
                    for a in node.names:
                        self._check_qual(f"{mod}.{a.name}", node, imported=True)
                for a in node.names:
                    if a.name == "Model":
                        self.report("no-reference", node, f"imports the reference Model from {node.module}; "
                                    "ModelNew must compute the result with its own kernels, not call the reference")
            elif isinstance(node, (ast.Name, ast.Attribute)) or (
                    isinstance(node, ast.Call) and (self._is_builtin(node.func, "getattr")
                                                    or self._is_builtin(node.func, "__import__"))):
                qual = self.resolve(node)
                if qual:
                    self._check_qual(qual, node)
                if isinstance(node, ast.Attribute):
                    self._check_attr(node.attr, node)
                    if node.attr == "Model":
                        self.report("no-reference", node, "uses the reference Model; ModelNew must compute the "
                                    "result with its own kernels, not call the reference")
                    if node.attr == "__dict__" and self._rooted(node.value):
                        self.report("no-patching", node, f"reaches the namespace of {self.resolve(node.value)}")
                elif isinstance(node, ast.Name) and node.id == "__builtins__":
                    self.report("no-patching", node, "reaches __builtins__, the builtins namespace")
                elif isinstance(node, ast.Name) and node.id == "Model" and isinstance(node.ctx, ast.Load):
                    self.report("no-reference", node, "uses the reference Model; ModelNew must compute the "
                                "result with its own kernels, not call the reference")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _STRING_ATTRS:
                rule, why = _ATTRS[node.value]
                self.report(rule, node, f"names {node.value!r}, which {why}")
            elif isinstance(node, ast.ClassDef):
                self._check_class(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in (
                    "__torch_function__", "__torch_dispatch__"):
                self.report("no-tensor-subclass", node, f"defines {node.name}, which hooks tensor dispatch "
                            "(a lazy or fake output)")

    def _check_qual(self, qual: str, node: ast.AST, imported: bool = False) -> bool:
        hit = self._banned(qual)
        if not hit:
            return False
        rule, why, entry = hit
        verb = "imports" if imported else "uses"
        self.report(rule, node, f"{verb} {entry}, which {why}")
        return True

    def _check_attr(self, attr: str, node: ast.AST) -> None:
        if attr in _ATTRS:
            rule, why = _ATTRS[attr]
            self.report(rule, node, f"reads .{attr}, which {why}")

    def _check_class(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            qual = self.resolve(base)
            if (isinstance(base, ast.Name) and base.id == "Model") or (
                    isinstance(base, ast.Attribute) and base.attr == "Model"):
                self.report("no-reference", node, f"class {node.name} subclasses the reference Model; write "
                            "ModelNew as its own nn.Module whose forward launches your kernels")
            if qual in _TENSOR_BASES:
                self.report("no-tensor-subclass", node, f"class {node.name} subclasses {qual}; outputs must be "
                            "plain tensors")

    # -- statements: patching, fallbacks, calls ---------------------------------------------------
    def _scan_statements(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for t in targets:
                    self._check_target(t, node)
            elif isinstance(node, ast.Call):
                self._check_call(node)

    def _check_target(self, target: ast.AST, stmt: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._check_target(elt, stmt)
            return
        if isinstance(target, ast.Starred):
            self._check_target(target.value, stmt)
            return
        if isinstance(target, ast.Attribute):
            if target.attr == "__class__":
                self.report("no-tensor-subclass", stmt, "assigns __class__, which changes what an object is "
                            "(a lazy or fake output)")
                return
            base = self.resolve(target.value)
            if base is not None:
                qual = f"{base}.{target.attr}"
                if not qual.startswith(_PATCH_OK_PREFIXES):
                    self.report("no-patching", stmt, f"assigns {qual}")
                return
            if self._rooted(target.value):
                self.report("no-patching", stmt, f"assigns .{target.attr} on {ast.unparse(target.value)}, which "
                            "holds a module or one of its members")
                return
            if _is_dunder(target.attr) and target.attr not in ("__doc__", "__name__", "__qualname__"):
                self.report("no-patching", stmt, f"assigns {target.attr}, replacing how an object behaves")
            elif isinstance(target.value, ast.Call) and self._is_builtin(target.value.func, "type"):
                self.report("no-patching", stmt, f"assigns {target.attr} on a type() result")
        elif isinstance(target, ast.Subscript):
            base = self.resolve(target.value)
            if base is not None and base != "os.environ":
                self.report("no-patching", stmt, f"assigns an item of {base}")
            elif isinstance(target.value, ast.Call):
                func = self.resolve(target.value.func)
                if func in ("builtins.vars", "builtins.globals") and (
                        func == "builtins.globals" or any(self._rooted(a) for a in target.value.args)):
                    self.report("no-patching", stmt, f"assigns through {_last(func)}()")

    def _mutated_params(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
        """Parameters of a candidate function whose attributes it sets or deletes."""
        params = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]]
        out: set[str] = set()

        def root(expr: ast.AST) -> str | None:
            while isinstance(expr, (ast.Attribute, ast.Subscript)):
                expr = expr.value
            return expr.id if isinstance(expr, ast.Name) else None

        for sub in ast.walk(fn):
            targets: list[ast.AST] = []
            if isinstance(sub, (ast.Assign, ast.Delete)):
                targets = list(sub.targets)
            elif isinstance(sub, (ast.AugAssign, ast.AnnAssign)):
                targets = [sub.target]
            for t in targets:
                for tt in ast.walk(t):
                    if isinstance(tt, ast.Attribute) and isinstance(tt.ctx, (ast.Store, ast.Del)):
                        name = root(tt.value)
                        if name in params:
                            out.add(name)
                    elif isinstance(tt, ast.Subscript) and isinstance(tt.value, ast.Attribute) \
                            and tt.value.attr == "__dict__" and root(tt.value) in params:
                        out.add(str(root(tt.value)))
                    elif isinstance(tt, ast.Subscript) and isinstance(tt.value, ast.Call) and tt.value.args \
                            and self._is_builtin(tt.value.func, "vars") and root(tt.value.args[0]) in params:
                        out.add(str(root(tt.value.args[0])))
            if isinstance(sub, ast.Call) and sub.args and (
                    self._is_builtin(sub.func, "setattr") or self._is_builtin(sub.func, "delattr")):
                if root(sub.args[0]) in params:
                    out.add(str(root(sub.args[0])))
        return [p for p in params if p in out]

    def _check_helper_call(self, node: ast.Call) -> None:
        """``patch(torch.cuda.Event)`` where the candidate's ``patch`` sets attributes of its argument."""
        fn: ast.FunctionDef | ast.AsyncFunctionDef | None = None
        skip = 0
        if isinstance(node.func, ast.Name) and node.func.id in self._module_functions:
            fn = self._module_functions[node.func.id]
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id in ("self", "cls") and node.func.attr in self._methods:
            fn, skip = self._methods[node.func.attr], 1
        if fn is None:
            return
        mutated = self._mutated_params(fn)
        if not mutated:
            return
        positional = [*fn.args.posonlyargs, *fn.args.args]
        passed: dict[str, ast.AST] = {a.arg: d for a, d in zip(positional[::-1], fn.args.defaults[::-1])}
        passed.update({a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None})
        passed.update(zip([a.arg for a in positional][skip:], node.args))
        passed.update({k.arg: k.value for k in node.keywords if k.arg})
        for name in mutated:
            arg = passed.get(name)
            if arg is not None and self._rooted(arg):
                self.report("no-patching", node, f"passes {ast.unparse(arg)} to {fn.name}(), which sets "
                            f"attributes of its parameter {name!r}")

    def _check_call(self, node: ast.Call) -> None:
        self._check_helper_call(node)
        func = self.resolve(node.func)
        if func in ("builtins.setattr", "builtins.delattr") and node.args:
            obj = node.args[0]
            if self._rooted(obj) or (isinstance(obj, ast.Call) and self._is_builtin(obj.func, "type")):
                self.report("no-patching", node, f"{_last(func)}() on {self.resolve(obj) or 'a type'}")
            elif len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "__class__":
                self.report("no-tensor-subclass", node, "sets __class__, which changes what an object is")
        elif func == "builtins.getattr" and len(node.args) >= 2:
            if not isinstance(node.args[1], ast.Constant) and self._rooted(node.args[0]):
                self.report("no-dynamic-code", node, f"getattr() on {self.resolve(node.args[0])} with a computed "
                            "name")
        elif func == "builtins.vars" and node.args and self._rooted(node.args[0]):
            self.report("no-patching", node, f"vars() on {self.resolve(node.args[0])} reaches its namespace")
        if self._is_load_call(node):
            for kw in node.keywords:
                if kw.arg == "build_directory":
                    self.report("no-files", node, "passes build_directory to load_inline, which writes where it "
                                "is told; leave it out and kforge builds in its own folder")

    # -- C++ sources ------------------------------------------------------------------------
    def _strings(self) -> Iterator[tuple[ast.AST, str]]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if not isinstance(self.parents.get(node), ast.JoinedStr):
                    yield node, node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                               for v in node.values)
                yield node, text

    def _cxx_sources(self) -> list[tuple[ast.AST, str]]:
        """Strings that are C/C++ source: passed (directly or by name) to a load call, or that look like it."""
        fed: set[ast.AST] = set()
        names: set[str] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and self._is_load_call(node):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    for sub in ast.walk(arg):
                        fed.add(sub)
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id in names for t in targets):
                    fed.update(ast.walk(node.value))
        return [(n, s) for n, s in self._strings() if n in fed or any(h in s for h in _CXX_HINTS)]

    def _is_load_call(self, node: ast.Call) -> bool:
        """torch.utils.cpp_extension.load_inline/load (or a load_inline whose import we can't see)."""
        qual = self.resolve(node.func)
        if qual:
            return "cpp_extension" in qual and _last(qual) in ("load_inline", "load")
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        return name == "load_inline"

    def _scan_cxx_strings(self) -> None:
        for node, text in self._cxx_sources():
            clean = _CXX_COMMENT.sub(" ", text)
            for pattern, rule, template in _CXX_RULES:
                m = pattern.search(clean)
                if m:
                    found = next((g for g in m.groups() if g), m.group(0)).strip()
                    line = getattr(node, "lineno", 0) + clean.count("\n", 0, m.start())
                    self.report(rule, line, template.format(found))

    # -- structure: ModelNew, kernels, launches, fallbacks, library ops ------------------------------
    def _module_scope(self) -> Iterator[ast.stmt]:
        """Module-level statements, looking inside if/try/with blocks (not functions or classes)."""
        stack = list(reversed(self.tree.body))
        while stack:
            stmt = stack.pop()
            yield stmt
            if isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                blocks = [stmt.body, getattr(stmt, "orelse", [])]
                if isinstance(stmt, ast.Try):
                    blocks += [h.body for h in stmt.handlers] + [stmt.finalbody]
                for block in reversed(blocks):
                    stack.extend(reversed(block))

    def _check_structure(self) -> None:
        self.classes: dict[str, ast.ClassDef] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        model_new: ast.ClassDef | None = None
        model_new_bound = False
        for stmt in self._module_scope():
            if isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = stmt
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[stmt.name] = stmt
        for stmt in self._module_scope():  # the last binding of ModelNew is the one the sandbox uses
            if isinstance(stmt, ast.ClassDef) and stmt.name == "ModelNew":
                model_new = stmt
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and any(
                    isinstance(t, ast.Name) and t.id == "ModelNew"
                    for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])):
                model_new_bound = True
                value = stmt.value
                model_new = self.classes.get(value.id) if isinstance(value, ast.Name) else None
        if model_new is None:
            msg = ("ModelNew must be a class defined in the candidate" if model_new_bound else
                   "no class ModelNew at module level")
            self.report("needs-model-new", None, msg + ": define `class ModelNew(nn.Module)` with the same "
                        "__init__ and forward signatures as Model")

        self.kernel_defs: list[ast.AST] = []
        self._find_kernels()
        language = {"triton": "@triton.jit kernel", "cuda": "__global__ CUDA kernel compiled with load_inline",
                    "cutlass": "CUTLASS/CuTe kernel (a __global__ kernel or cutlass/cute includes, compiled "
                               "with load_inline, or a CuTe DSL @cute.kernel)"}.get(self.backend)
        if language and not self.kernel_defs:
            self.report("needs-kernel", None, self._missing_kernel_message(language))

        entries = self._entries(model_new) if model_new is not None else []
        reach = self._reachable(entries)
        if language and self.kernel_defs and model_new is not None:
            if not entries:
                self.report("needs-launch", model_new, "ModelNew has no forward method: define forward(...) "
                            "that launches your kernel")
            elif not any(self._launches_in(f) for f in reach):
                self.report("needs-launch", entries[0], "ModelNew.forward never launches the candidate's kernel "
                            f"(looked through the functions and methods it calls): {self._launch_hint()}")
        if language:
            self._check_fallbacks()
        self._library_warnings(reach)

    def _missing_kernel_message(self, language: str) -> str:
        if self.backend == "triton":
            return f"found no {language}: write the computation as a @triton.jit function and launch it from forward"
        sources = self._cxx_sources()
        has_global = any("__global__" in s for _, s in sources)
        if has_global and not self._load_calls:
            return ("the CUDA source is never compiled: pass it to torch.utils.cpp_extension.load_inline and call "
                    "the compiled function from forward")
        return (f"found no {language}: put the kernel in a source string and compile it with "
                "torch.utils.cpp_extension.load_inline")

    def _launch_hint(self) -> str:
        if self.backend == "triton":
            return "call it as kernel[grid](...) from forward or from a function forward calls"
        return "call the function that load_inline compiled (module.fn(...)) from forward"

    # kernels and what launches them
    def _decorator_quals(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
        out: list[str] = []
        for dec in fn.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            fallback = target.attr if isinstance(target, ast.Attribute) else str(getattr(target, "id", ""))
            out.append(self.resolve(target) or fallback)
        return out

    @staticmethod
    def _is_triton_decorator(qual: str) -> bool:
        return qual.startswith("triton.") and _last(qual) in ("jit", "autotune", "heuristics")

    @staticmethod
    def _is_cute_decorator(qual: str) -> bool:
        return (qual.startswith("cutlass.") or qual.startswith("cute.")) and _last(qual) in ("kernel", "jit")

    def _find_kernels(self) -> None:
        self.jitted: set[ast.AST] = set()  # device-code functions: not part of the Python call graph
        kernel_names: set[str] = set()
        self._load_calls: list[ast.Call] = []
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                quals = self._decorator_quals(node)
                if any(self._is_triton_decorator(q) for q in quals):
                    self.jitted.add(node)
                    if self.backend == "triton":
                        self.kernel_defs.append(node)
                        kernel_names.add(node.name)
                if any(self._is_cute_decorator(q) for q in quals):
                    self.jitted.add(node)
                    if self.backend == "cutlass":
                        self.kernel_defs.append(node)
                        kernel_names.add(node.name)
            elif isinstance(node, ast.Call):
                qual = self.resolve(node.func) or ""
                if self.backend == "triton" and self._is_triton_decorator(qual) and _last(qual) == "jit":
                    parent = self.parents.get(node)
                    if isinstance(parent, ast.Assign):
                        self.kernel_defs.append(node)
                        kernel_names.update(t.id for t in parent.targets if isinstance(t, ast.Name))
                if self._is_load_call(node):
                    self._load_calls.append(node)
        self.kernel_names = kernel_names
        self.kernel_attrs: set[str] = set()
        self._ext_calls: set[ast.AST] = set()  # load_inline(...) calls whose module holds a kernel
        if self.backend in ("cuda", "cutlass") and self._load_calls:
            sources = [s for _, s in self._cxx_sources()]
            has_kernel = any("__global__" in s for s in sources)
            if self.backend == "cutlass":
                has_kernel = has_kernel or any(re.search(r"#\s*include\s*[<\"](cutlass|cute)/", s) for s in sources)
            if has_kernel:
                self.kernel_defs.extend(self._load_calls)
                self._ext_calls.update(self._load_calls)
        # Names and attributes bound to anything that mentions a kernel (aliases, launchers, compiled
        # extension modules, functions that return one of these).
        for _ in range(4):
            before = len(self.kernel_names) + len(self.kernel_attrs)
            for node in ast.walk(self.tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                    if self._mentions_kernel(node.value):
                        self._bind_targets(node, self.kernel_names, self.kernel_attrs)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node not in self.jitted:
                    if any(isinstance(r, ast.Return) and r.value is not None and self._mentions_kernel(r.value)
                           for r in ast.walk(node)):
                        self.kernel_names.add(node.name)
            if len(self.kernel_names) + len(self.kernel_attrs) == before:
                break

    @staticmethod
    def _bind_targets(stmt: ast.AST | None, names: set[str], attrs: set[str]) -> None:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        else:
            return
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
                elif isinstance(sub, ast.Attribute) and sub is t:
                    attrs.add(sub.attr)

    def _mentions_kernel(self, expr: ast.AST) -> bool:
        for sub in ast.walk(expr):
            if sub in self._ext_calls:
                return True
            if isinstance(sub, ast.Name) and sub.id in self.kernel_names:
                return True
            if isinstance(sub, ast.Attribute) and (sub.attr in self.kernel_attrs or sub.attr in self.kernel_names):
                return True
        return False

    def _is_launch(self, call: ast.Call) -> bool:
        if call in self._load_calls:
            return False
        func = call.func
        if isinstance(func, ast.Subscript):  # kernel[grid](...)
            return self._mentions_kernel(func.value)
        if isinstance(func, ast.Attribute) and func.attr == "run" and self.backend == "triton":
            return self._mentions_kernel(func.value)
        if self.backend in ("cuda", "cutlass"):
            qual = self.resolve(func) or ""
            if qual.startswith("torch.ops.") and not qual.startswith(("torch.ops.aten", "torch.ops.prims")) \
                    and self._load_calls:
                return True  # load_inline(..., is_python_module=False) registers ops under torch.ops
        if self._mentions_kernel(func):
            return True
        # launch(relu_kernel, x): the kernel handed to a helper of the candidate's that launches its argument
        callee = self.functions.get(func.id) if isinstance(func, ast.Name) else None
        if callee is not None and any(self._mentions_kernel(a) for a in [*call.args, *(k.value for k in call.keywords)]):
            params = {a.arg for a in [*callee.args.posonlyargs, *callee.args.args, *callee.args.kwonlyargs]}
            return any(isinstance(sub, ast.Call) and isinstance(sub.func, ast.Subscript)
                       and isinstance(sub.func.value, ast.Name) and sub.func.value.id in params
                       for sub in ast.walk(callee))
        return False

    # the Python call graph, from ModelNew.forward
    def _class_methods(self, cls: ast.ClassDef, seen: set[str] | None = None) -> dict[str, ast.AST]:
        seen = seen if seen is not None else set()
        if cls.name in seen:
            return {}
        seen.add(cls.name)
        methods: dict[str, ast.AST] = {}
        for base in cls.bases:  # inherited from the candidate's own classes
            if isinstance(base, ast.Name) and base.id in self.classes:
                methods.update(self._class_methods(self.classes[base.id], seen))
        for stmt in cls.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                methods[stmt.name] = stmt
            elif isinstance(stmt, ast.Assign):  # forward = _impl
                for t in stmt.targets:
                    if isinstance(t, ast.Name):
                        methods[t.id] = stmt
        return methods

    def _entries(self, model_new: ast.ClassDef) -> list[ast.AST]:
        methods = self._class_methods(model_new)
        return [methods[m] for m in ("forward", "__call__") if m in methods]

    def _callees(self, fn: ast.AST) -> list[ast.AST]:
        """The candidate's functions and methods that ``fn`` refers to (permissively: any mention)."""
        if self._methods_by_name is None:
            self._methods_by_name, self._instance_attrs, self._callee_cache = {}, {}, {}
            for cls in self.classes.values():
                for name, node in self._class_methods(cls).items():
                    self._methods_by_name.setdefault(name, []).append(node)
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign):  # self.op = Helper() -> {"op": {"Helper"}}
                    classes = {s.id for s in ast.walk(node.value) if isinstance(s, ast.Name) and s.id in self.classes}
                    for t in node.targets:
                        if isinstance(t, ast.Attribute) and classes:
                            self._instance_attrs.setdefault(t.attr, set()).update(classes)
        assert self._callee_cache is not None and self._instance_attrs is not None
        if fn not in self._callee_cache:
            out: list[ast.AST] = []
            for sub in ast.walk(fn):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    if sub.id in self.functions:
                        out.append(self.functions[sub.id])
                    elif sub.id in self.classes:
                        out.extend(self._class_methods(self.classes[sub.id]).values())
                elif isinstance(sub, ast.Attribute):
                    out.extend(self._methods_by_name.get(sub.attr, []))
                    for cname in self._instance_attrs.get(sub.attr, ()):
                        out.extend(self._class_methods(self.classes[cname]).values())
            self._callee_cache[fn] = out
        return self._callee_cache[fn]

    def _reachable(self, entries: list[ast.AST]) -> list[ast.AST]:
        seen: list[ast.AST] = []
        seen_set: set[ast.AST] = set()
        todo = list(entries)
        while todo:
            fn = todo.pop()
            if fn in seen_set or fn in self.jitted:
                continue
            seen.append(fn)
            seen_set.add(fn)
            todo.extend(self._callees(fn))
        return seen

    def _launches_in(self, fn: ast.AST) -> bool:
        if fn not in self._direct_launch:
            self._direct_launch[fn] = any(isinstance(sub, ast.Call) and self._is_launch(sub) for sub in ast.walk(fn))
        return self._direct_launch[fn]

    def _launching(self) -> set[str]:
        """Names of the candidate's functions and methods that launch a kernel, directly or not."""
        if self._launching_names is None:
            funcs: list[ast.AST] = [n for n in ast.walk(self.tree) if isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n not in self.jitted]
            callers: dict[ast.AST, list[ast.AST]] = {}
            for fn in funcs:
                for callee in self._callees(fn):
                    callers.setdefault(callee, []).append(fn)
            launching: set[ast.AST] = set()
            todo: list[ast.AST] = [fn for fn in funcs if self._launches_in(fn)]
            while todo:  # everything that can reach a direct launcher
                fn = todo.pop()
                if fn in launching:
                    continue
                launching.add(fn)
                todo.extend(callers.get(fn, []))
            self._launching_names = {getattr(fn, "name", "") for fn in launching} - {""}
        return self._launching_names

    def _block_launches(self, stmts: list[ast.stmt]) -> bool:
        launching = self._launching()
        for stmt in stmts:
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Call) and self._is_launch(sub):
                    return True
                if isinstance(sub, ast.Name) and sub.id in launching and sub.id in self.functions:
                    return True
                if isinstance(sub, ast.Attribute) and sub.attr in launching:
                    return True
        return False

    def _check_fallbacks(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Try) and self._block_launches(node.body):
                for handler in node.handlers:
                    why = self._handler_computes(handler.body)
                    if why:
                        self.report("no-fallback", handler, f"the except handler around a kernel launch {why}; "
                                    "a failing kernel must fail: let the exception propagate (or re-raise it)")
                if any(isinstance(s, ast.Return) for stmt in node.finalbody for s in ast.walk(stmt)):
                    self.report("no-fallback", node.finalbody[0], "a finally block around a kernel launch returns, "
                                "which discards the kernel's exception; let it propagate")
            elif isinstance(node, ast.With) and self._block_launches(node.body):
                for item in node.items:
                    expr = item.context_expr
                    qual = self.resolve(expr.func) if isinstance(expr, ast.Call) else None
                    if qual and _last(qual) == "suppress":
                        self.report("no-fallback", node, "contextlib.suppress around a kernel launch swallows the "
                                    "kernel's exception; let it propagate")

    def _handler_computes(self, body: list[ast.stmt]) -> str | None:
        if body and isinstance(body[-1], ast.Raise):
            return None  # every path out of the handler raises
        for stmt in body:
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Return):
                    return "returns a result"
                if isinstance(sub, (ast.Yield, ast.YieldFrom)):
                    return "yields a result"
                if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.MatMult):
                    return "computes a matmul"
                if isinstance(sub, ast.Call):
                    qual = self.resolve(sub.func)
                    if qual in _HANDLER_OK_CALLS or (qual or "").startswith("warnings.") or \
                            _LOGGING.match(ast.unparse(sub.func)):
                        continue
                    if isinstance(sub.func, ast.Name) and sub.func.id.endswith(("Error", "Exception", "Warning")):
                        continue
                    return f"calls {qual or ast.unparse(sub.func)}"
        return None

    # warnings
    def _library_warnings(self, reach: list[ast.AST]) -> None:
        lib_attrs: dict[str, str] = {}  # self.ln = nn.LayerNorm(...) -> {"ln": "torch.nn.LayerNorm"}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                qual = self.resolve(node.value.func) or ""
                if qual.startswith("torch.nn.") and _last(qual) in _LIB_MODULES:
                    for t in node.targets:
                        if isinstance(t, ast.Attribute):
                            lib_attrs[t.attr] = qual
        tail = ("computes in PyTorch, not in your kernel (fine for glue, not for the problem's main "
                "computation)")
        for fn in reach:
            for sub in ast.walk(fn):
                if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.MatMult):
                    self.warn("library-op", sub, f"forward uses the @ operator, which {tail}")
                if not isinstance(sub, ast.Call):
                    continue
                called = self.resolve(sub.func)
                if called:
                    qual = called
                    if (qual.startswith("torch.nn.functional.") and _last(qual) not in ("pad",)) or (
                            qual.startswith(_LIB_NAMESPACES) and _last(qual) in _LIB_OPS):
                        self.warn("library-op", sub, f"forward calls {qual}, which {tail}")
                elif isinstance(sub.func, ast.Attribute):
                    if sub.func.attr in lib_attrs and isinstance(sub.func.value, ast.Name) \
                            and sub.func.value.id == "self":
                        self.warn("library-op", sub, f"forward calls self.{sub.func.attr} "
                                  f"({lib_attrs[sub.func.attr]}), which {tail}")
                    elif sub.func.attr in _LIB_OPS and sub.func.attr not in ("compile", "sort", "triu", "tril"):
                        self.warn("library-op", sub, f"forward calls .{sub.func.attr}(), which {tail}")
