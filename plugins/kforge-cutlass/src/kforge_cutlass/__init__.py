"""kforge-cutlass: the ``cutlass`` backend for kforge, and where CUTLASS's headers are.

A CUTLASS candidate is a CUDA C++ candidate (``load_inline``) that includes CUTLASS or CuTe headers.
It finds them with::

    from kforge_cutlass import include_paths

    ext = load_inline(..., extra_include_paths=include_paths(), extra_cuda_cflags=CUTLASS_NVCC_FLAGS)

This module uses the standard library only and imports nothing of kforge, so importing it in a
candidate's sandbox costs nothing; the backend itself lives in :mod:`kforge_cutlass.plugin`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

__all__ = ["CUTLASS_NVCC_FLAGS", "cutlass_version", "header_root", "include_paths"]

# nvcc flags for a CUTLASS build, on top of what torch.utils.cpp_extension already passes (-std=c++17
# or later, which CUTLASS needs, and --expt-relaxed-constexpr, repeated here for builds outside
# torch): NDEBUG removes CUTLASS's device-side asserts; the -U flags undo torch's
# __CUDA_NO_HALF_OPERATORS__-style defines, so that __half/__nv_bfloat16 arithmetic and conversions
# written next to CUTLASS (epilogues, glue kernels) compile as in CUTLASS's own builds. CUTLASS's
# cutlass::half_t/bfloat16_t GEMMs also compile with torch's defines left in place.
CUTLASS_NVCC_FLAGS = [
    "-O3",
    "-DNDEBUG",
    "--expt-relaxed-constexpr",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
]

_HEADER = Path("cutlass") / "cutlass.h"


def _wheel_root() -> Path | None:
    """``cutlass_library/source`` of the nvidia-cutlass wheel, located without importing it (its
    package imports numpy, networkx and the CUDA Python bindings)."""
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location) / "source"
        if (root / "include" / _HEADER).is_file():
            return root
    return None


def header_root() -> Path:
    """The CUTLASS source tree whose ``include/`` kforge uses.

    ``CUTLASS_PATH`` (a CUTLASS checkout, as kforge's Modal image sets it) wins when set; otherwise
    the headers shipped in the ``nvidia-cutlass`` wheel. Raises FileNotFoundError with what to install
    when neither is there."""
    env = os.environ.get("CUTLASS_PATH")
    if env:
        root = Path(env).expanduser()
        if not (root / "include" / _HEADER).is_file():
            raise FileNotFoundError(f"CUTLASS_PATH={env} has no include/{_HEADER.as_posix()}: point it at a "
                                    "CUTLASS checkout, or unset it to use the nvidia-cutlass wheel's headers")
        return root
    wheel = _wheel_root()
    if wheel is None:
        raise FileNotFoundError("CUTLASS headers not found: pip install nvidia-cutlass (the headers are all "
                                "kforge needs: `pip install --no-deps nvidia-cutlass` is enough), or set "
                                "CUTLASS_PATH to a CUTLASS checkout")
    return wheel


def include_paths() -> list[str]:
    """Directories to pass as ``extra_include_paths=`` to ``load_inline``: CUTLASS/CuTe's ``include``
    and, where present, ``tools/util/include`` (cutlass/util/*: host tensors, reference kernels)."""
    root = header_root()
    paths = [root / "include"]
    util = root / "tools" / "util" / "include"
    if util.is_dir():
        paths.append(util)
    return [str(p) for p in paths]


def cutlass_version() -> str:
    """The CUTLASS version of the headers ``include_paths()`` returns, from ``cutlass/version.h``."""
    text = (header_root() / "include" / "cutlass" / "version.h").read_text()
    parts = [re.search(rf"#define\s+CUTLASS_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "?" for m in parts)
