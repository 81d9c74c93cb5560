"""Tests for kforge-cutlass.

They run from the source tree when the plugin is not installed (the hook is registered on a plugin
manager built here, the way kforge builds its own); the entry-point test needs ``pip install -e
plugins/kforge-cutlass``. Tests of the headers skip without CUTLASS (the nvidia-cutlass wheel or
CUTLASS_PATH), and the judge tests without a GPU.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pluggy
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
try:
    distribution("kforge-cutlass")
    INSTALLED = True
except PackageNotFoundError:
    INSTALLED = False
if importlib.util.find_spec("kforge_cutlass") is None:
    sys.path.insert(0, str(SRC))

from kforge import hookspecs  # noqa: E402
from kforge.checks import check_candidate  # noqa: E402
from kforge.plugins import DEFAULT_PLUGINS, build_registry, describe_plugins  # noqa: E402
from kforge.problems import SOLUTIONS_DIR, builtin_problems  # noqa: E402

import kforge_cutlass  # noqa: E402
from kforge_cutlass import plugin as cutlass_plugin  # noqa: E402
from kforge_cutlass.plugin import CutlassBackend  # noqa: E402

DIST = "kforge-cutlass"
SOLUTIONS = sorted(cutlass_plugin.SOLUTIONS_DIR.glob("*.py"))
PROBLEMS = {p.id: p for p in builtin_problems()}
CUDA_SOLUTIONS = sorted((SOLUTIONS_DIR / "cuda").glob("*.py"))  # kforge's own CUDA C++ solutions


def _has_headers() -> bool:
    try:
        kforge_cutlass.header_root()
    except FileNotFoundError:
        return False
    return True


def _cuda_available() -> bool:
    """As kforge's own tests decide (tests/conftest.py, which does not reach this folder)."""
    import shutil

    if not shutil.which("nvidia-smi"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch install means no usable GPU
        return False


needs_headers = pytest.mark.skipif(not _has_headers(), reason="CUTLASS headers not installed "
                                   "(pip install --no-deps nvidia-cutlass, or set CUTLASS_PATH)")
needs_gpu = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU (nvidia-smi and "
                               "torch.cuda.is_available())")


def manager_with_plugin() -> pluggy.PluginManager:
    """kforge's plugin manager with the built-ins and this plugin registered by hand (no entry points)."""
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.register(cutlass_plugin, name="cutlass")
    pm.check_pending()
    return pm


# -- registration and guidance ---------------------------------------------------------------------
def test_the_hook_registers_the_cutlass_backend() -> None:
    registry = build_registry(manager_with_plugin())
    assert registry.get("backends", "cutlass") is CutlassBackend
    assert {"triton", "cuda", "cutlass"} <= set(registry.names("backends"))
    (entry,) = [p for p in describe_plugins(registry) if "register_backends" in p["hooks"] and
                any(b["name"] == "cutlass" for b in p["registers"].get("backends", []))]
    (item,) = entry["registers"]["backends"]
    assert "CUTLASS" in item["description"]


@pytest.mark.skipif(not INSTALLED, reason="needs pip install -e plugins/kforge-cutlass (the entry point)")
def test_the_entry_point_registers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFORGE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("KFORGE_BLOCK_PLUGINS", raising=False)
    registry = build_registry()
    assert registry.get("backends", "cutlass") is CutlassBackend
    assert registry.items["backends"]["cutlass"].plugin == DIST


def test_guidance_explains_headers_and_flags_and_its_example_is_a_valid_candidate() -> None:
    text = CutlassBackend().guidance()
    for needle in ("from kforge_cutlass import", "include_paths()", "extra_include_paths",
                   "CUTLASS_NVCC_FLAGS",
                   "-DNDEBUG", "--expt-relaxed-constexpr", "TORCH_CUDA_ARCH_LIST", "9.0a", "alignment",
                   "can_implement", "class ModelNew(nn.Module)", "load_inline"):
        assert needle in text, needle
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    result = check_candidate(example, "cutlass")
    assert list(result) == [] and result.warnings == [], [str(v) for v in [*result, *result.warnings]]


def test_static_check_uses_the_cutlass_rules() -> None:
    backend = CutlassBackend()
    (example,) = re.findall(r"```python\n(.*?)```", backend.guidance(), flags=re.S)
    assert backend.static_check(example) == []
    plain = "import torch\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n" \
            "        return torch.relu(x)\n"
    assert any("needs-kernel" in m for m in backend.static_check(plain))
    own_stream = "#include <torch/extension.h>\ncudaStream_t s; void f() { cudaStreamCreate(&s); }"
    assert any("no-streams" in m for m in backend.static_check(
        example.replace("#include <torch/extension.h>", own_stream)))


def test_prompt_carries_the_guidance() -> None:
    from kforge.prompts import build_prompt

    prompt = build_prompt(PROBLEMS["matmul"], CutlassBackend(), {}, {})
    assert CutlassBackend().guidance().strip() in prompt.user
    assert "cutlass" in prompt.system


# -- include paths -------------------------------------------------------------------------------------
def test_importing_the_helper_imports_no_kforge() -> None:
    code = "import sys, kforge_cutlass; print(sorted(m for m in sys.modules if m.split('.')[0] == 'kforge'))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         check=True)
    assert out.stdout.strip() == "[]"


@needs_headers
def test_include_paths_resolve_to_cutlass_and_cute_headers() -> None:
    paths = [Path(p) for p in kforge_cutlass.include_paths()]
    assert all(p.is_dir() for p in paths)
    include = paths[0]
    for header in ("cutlass/cutlass.h", "cutlass/gemm/device/gemm.h", "cute/tensor.hpp",
                   "cutlass/epilogue/thread/linear_combination.h"):
        assert (include / header).is_file(), header
    assert re.fullmatch(r"\d+\.\d+\.\d+", kforge_cutlass.cutlass_version())


def test_cutlass_path_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "include" / "cutlass").mkdir(parents=True)
    (tmp_path / "include" / "cutlass" / "cutlass.h").write_text("#pragma once\n")
    (tmp_path / "include" / "cutlass" / "version.h").write_text(
        "#define CUTLASS_MAJOR 9\n#define CUTLASS_MINOR 8\n#define CUTLASS_PATCH 7\n")
    monkeypatch.setenv("CUTLASS_PATH", str(tmp_path))
    assert kforge_cutlass.include_paths() == [str(tmp_path / "include")]
    (tmp_path / "tools" / "util" / "include").mkdir(parents=True)
    util = tmp_path / "tools" / "util" / "include"
    assert kforge_cutlass.include_paths() == [str(tmp_path / "include"), str(util)]
    assert kforge_cutlass.cutlass_version() == "9.8.7"
    monkeypatch.setenv("CUTLASS_PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="CUTLASS_PATH"):
        kforge_cutlass.include_paths()


def test_no_headers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTLASS_PATH", raising=False)
    monkeypatch.setattr(kforge_cutlass, "_wheel_root", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install nvidia-cutlass"):
        kforge_cutlass.include_paths()


# -- the example solutions ---------------------------------------------------------------------------
def _signature(tree: ast.Module, cls: str, method: str) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == method:
                    return [a.arg for a in fn.args.args]
    return None


def _extension_names(paths: list[Path]) -> list[str]:
    names = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_inline":
                names += [k.value.value for k in node.keywords
                          if k.arg == "name" and isinstance(k.value, ast.Constant)]
    return names


def test_solutions_are_for_builtin_problems() -> None:
    assert {p.stem for p in SOLUTIONS} == {"matmul", "matmul_bf16"}
    assert cutlass_plugin.solutions() == {p.stem: p for p in SOLUTIONS}


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_is_a_clean_cutlass_candidate(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    compile(source, str(path), "exec")
    result = check_candidate(source, "cutlass")
    assert list(result) == [] and result.warnings == [], [str(v) for v in [*result, *result.warnings]]
    reference = ast.parse(PROBLEMS[path.stem].source)
    for method in ("__init__", "forward"):
        assert _signature(tree, "ModelNew", method) == _signature(reference, "Model", method), method
    assert "#include <cutlass/gemm/device/gemm.h>" in source
    assert "extra_include_paths=include_paths()" in source
    assert "extra_cuda_cflags=CUTLASS_NVCC_FLAGS" in source
    assert "TORCH_CUDA_ARCH_LIST" not in source  # the judge picks the arch


def test_extension_names_are_unique_across_cuda_and_cutlass_solutions() -> None:
    names = _extension_names(SOLUTIONS)
    assert len(names) == len(SOLUTIONS) and all(n.startswith("kforge_cutlass_") for n in names)
    everything = names + _extension_names(CUDA_SOLUTIONS)
    assert len(everything) == len(set(everything))


# -- on a GPU: the real judge --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cutlass_judge(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(the judge, the solutions that failed to build), with kforge_cutlass importable in its sandboxes."""
    pytest.importorskip("torch")
    from kforge.runtime.judge import Judge

    with pytest.MonkeyPatch.context() as mp:
        if not INSTALLED:  # the sandbox imports the candidate, which imports kforge_cutlass
            mp.setenv("PYTHONPATH", os.pathsep.join(p for p in [str(SRC), os.environ.get("PYTHONPATH")] if p))
        judge = Judge(device="cuda", workdir=tmp_path_factory.mktemp("cutlass-judge"), keep_spare=False)
        arch = judge.info.get("cuda_arch")
        env = {**os.environ, **({"TORCH_CUDA_ARCH_LIST": str(arch)} if arch else {})}

        def build(path: Path) -> tuple[str, str | None]:
            # Compile into the torch extensions cache the sandboxes load from (a CUTLASS build is minutes).
            code = ("import importlib.util\n"
                    f"spec = importlib.util.spec_from_file_location('prebuild_{path.stem}', {str(path)!r})\n"
                    "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                                  env=env)
            return path.name, None if proc.returncode == 0 else (proc.stdout + proc.stderr)[-4000:]

        with ThreadPoolExecutor(len(SOLUTIONS)) as pool:
            failures = {name: err for name, err in pool.map(build, SOLUTIONS) if err is not None}
        try:
            yield judge, failures
        finally:
            judge.close()


@pytest.mark.gpu
@pytest.mark.slow
@needs_gpu
@needs_headers
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_is_correct_on_the_gpu(cutlass_judge: Any, path: Path) -> None:
    from kforge.runtime import protocol as P

    judge, build_failures = cutlass_judge
    assert path.name not in build_failures, build_failures[path.name]
    problem = PROBLEMS[path.stem]
    req = P.EvalRequest(
        request_id=f"cutlass-{problem.id}-{time.monotonic_ns()}", problem_id=problem.id,
        problem_source=problem.source, candidate_source=path.read_text(), backend="cutlass",
        shape_name="main",
        shape=problem.shape("main"), dtype=problem.dtype, atol=problem.atol, rtol=problem.rtol, trials=5,
        warmup=1, min_samples=0, flops=problem.flops, bytes=problem.bytes,
        heldout=list(problem.shapes.get("heldout") or []), compile_timeout_s=900.0, run_timeout_s=120.0)
    res = judge.evaluate(req)
    assert res.status == P.CORRECT, (res.status, res.guard, res.error, res.mismatch, res.log_tail)
    assert any("cutlass" in k.lower() for k in res.kernels), res.kernels  # CUTLASS's kernel ran
