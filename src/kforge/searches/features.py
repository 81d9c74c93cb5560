"""MAP-Elites feature definitions: where a judged candidate sits in an island's archive.

A :class:`Feature` maps a candidate's code and its judged result (``EvalResult.to_dict()``) to one
of a fixed number of bins. An archive cell is the tuple of a candidate's bins over the recipe's
features; a cell holds the fittest correct candidate seen for it (Mouret & Clune 2015).

Features are named in the recipe (``[search] features = ["roofline", "tile_size", "tensor_cores"]``).
A name is one of :data:`FEATURES` below, or ``"package.module:attribute"`` naming a ``Feature`` (or a
function of no arguments that returns one) in an installed module, so a project adds its own
features without touching kforge::

    # mykernels/features.py
    from kforge.searches.features import Feature

    def _smem(code, result):
        return 0 if "tl.dot" not in code else 1

    smem = Feature("smem", ("none", "some"), _smem, "uses shared memory")

    # recipe: features = ["roofline", "mykernels.features:smem"]

Bins are fixed edges chosen for kernels (not min-max scaled over the run as OpenEvolve does), so a
cell means the same thing at every point of a run, a resumed run bins exactly like an uninterrupted
one, and nothing but the cell key needs to be saved.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kforge.api import normalise_code
from kforge.options import RecipeError, close_match

Result = Mapping[str, Any]


@dataclass(frozen=True)
class Feature:
    """One archive dimension: ``fn(code, result)`` returns a bin index in ``range(len(labels))``."""

    name: str
    labels: tuple[str, ...]  # one human label per bin, in bin order
    fn: Callable[[str, Result], int]
    description: str = ""

    @property
    def bins(self) -> int:
        return len(self.labels)

    def __call__(self, code: str, result: Result | None) -> int:
        try:
            value = int(self.fn(code, result or {}))
        except Exception:  # noqa: BLE001 - a feature that cannot read a candidate puts it in bin 0
            value = 0
        return min(max(value, 0), self.bins - 1)


def bucket(value: float, edges: Sequence[float]) -> int:
    """The index of the first edge above ``value`` (``len(edges)`` when none is)."""
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


# -- built-in features ---------------------------------------------------------------------------
ROOFLINE_EDGES = (0.1, 0.3, 0.6)


def _roofline(code: str, result: Result) -> int:
    frac = result.get("roofline_fraction")
    if frac is None or not isinstance(frac, (int, float)) or math.isnan(float(frac)):
        return 0
    return 1 + bucket(float(frac), ROOFLINE_EDGES)


CODE_SIZE_EDGES = (40, 80, 160, 320)


def _code_size(code: str, result: Result) -> int:
    return bucket(len(normalise_code(code).splitlines()), CODE_SIZE_EDGES)


_TILE_NAME = re.compile(r"(BLOCK|TILE|_SIZE)", re.I)
TILE_EDGES = (64, 128, 256, 1024, 4096)


def tile_values(code: str) -> list[int]:
    """The tile sizes a candidate launches with: Triton launch/config keywords and upper-case
    constants named BLOCK*/TILE*/*_SIZE, and CUDA ``#define``/``constexpr`` block sizes and
    ``<<<grid, block>>>`` thread counts, as the ``tune`` generator finds them (AST, nothing run)."""
    from kforge.tunables import find_sites

    return [s.value for s in find_sites(code) if s.kind in ("block", "cuda", "threads")
            and (s.kind == "threads" or _TILE_NAME.search(s.name))]


def _tile_size(code: str, result: Result) -> int:
    values = tile_values(code)
    if not values:
        return 0
    return 1 + bucket(max(values), TILE_EDGES)


_TC_TRITON = re.compile(r"\btl\.dot\b|\btl\.dot_scaled\b")
_TC_CUDA = re.compile(r"\bwmma::|\bmma\.sync\b|\bwgmma\b|\b__hmma|\bmma_sync\b|\bcute::gemm\b|\bcublas\w*Gemm")


def _tensor_cores(code: str, result: Result) -> int:
    return 1 if _TC_TRITON.search(code) or _TC_CUDA.search(code) else 0


_KERNEL_DEF = re.compile(r"^\s*@(?:triton\.)?jit\b|__global__\s+\w", re.M)


def _kernels(code: str, result: Result) -> int:
    return min(len(_KERNEL_DEF.findall(code)), 3)


_WARPS = re.compile(r"\bnum_warps\s*=\s*(\d+)")


def _warps(code: str, result: Result) -> int:
    values = [int(v) for v in _WARPS.findall(code)]
    if not values:
        return 0
    return 1 + bucket(max(values), (4, 8, 16))


FEATURES: dict[str, Feature] = {}


def register_feature(feature: Feature) -> Feature:
    """Add a feature under its name (a duplicate name is an error)."""
    if feature.name in FEATURES and FEATURES[feature.name] is not feature:
        raise ValueError(f"a MAP-Elites feature named {feature.name!r} is already registered")
    FEATURES[feature.name] = feature
    return feature


for _f in (
    Feature("roofline", ("unknown", "<10%", "10-30%", "30-60%", ">=60%"), _roofline,
            "the candidate's fraction of the device's roofline (memory or compute bound), from the judge"),
    Feature("tile_size", ("none", "<64", "64-127", "128-255", "256-1023", "1024-4095", ">=4096"), _tile_size,
            "largest tile / block size the candidate launches with (BLOCK*/TILE*/*_SIZE constants, CUDA threads)"),
    Feature("tensor_cores", ("no", "yes"), _tensor_cores,
            "uses tensor cores (tl.dot in Triton; wmma/mma/wgmma/cuBLAS GEMM in CUDA)"),
    Feature("code_size", ("<40", "40-79", "80-159", "160-319", ">=320"), _code_size,
            "non-blank lines of code, comments excluded"),
    Feature("kernels", ("0", "1", "2", ">=3"), _kernels,
            "number of kernels defined (@triton.jit functions, __global__ functions): fusion"),
    Feature("warps", ("unset", "<4", "4-7", "8-15", ">=16"), _warps, "largest num_warps in a launch or config"),
):
    register_feature(_f)

DEFAULT_FEATURES = ("roofline", "tile_size", "tensor_cores")


def get_feature(spec: str) -> Feature:
    """A feature by built-in name or by ``module:attribute``; a RecipeError names what exists."""
    if spec in FEATURES:
        return FEATURES[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise RecipeError(f"search.features: cannot load {spec!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(obj, Feature) and callable(obj):
            obj = obj()
        if not isinstance(obj, Feature):
            raise RecipeError(f"search.features: {spec!r} is not a kforge.searches.features.Feature "
                              f"(nor a function returning one)")
        return obj
    raise RecipeError(f"search.features: unknown feature {spec!r}.{close_match(spec, FEATURES)} Built-in: "
                      f"{', '.join(sorted(FEATURES))}; or name your own as 'module:attribute'.")


def get_features(specs: Sequence[str]) -> list[Feature]:
    features = [get_feature(str(s)) for s in specs]
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise RecipeError(f"search.features names a feature twice: {names}")
    return features


def cell_of(features: Sequence[Feature], code: str, result: Result | None) -> tuple[int, ...]:
    return tuple(f(code, result) for f in features)


def cell_key(cell: Sequence[int]) -> str:
    """A cell as a JSON-friendly key: ``"1,3,0"`` (``""`` with no features: one cell)."""
    return ",".join(str(b) for b in cell)


def parse_cell(key: str) -> tuple[int, ...]:
    return tuple(int(b) for b in key.split(",")) if key else ()


def describe_cell(features: Sequence[Feature], key: str) -> dict[str, str]:
    """``{"roofline": "10-30%", "tile_size": "128-255", ...}`` for a cell key."""
    return {f.name: f.labels[b] if 0 <= b < f.bins else str(b) for f, b in zip(features, parse_cell(key))}


def n_cells(features: Sequence[Feature]) -> int:
    return math.prod(f.bins for f in features) if features else 1
