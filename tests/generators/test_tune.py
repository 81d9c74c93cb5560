"""The tune generator: tunable constants found by AST, variants valid, distinct and deterministic."""

from __future__ import annotations

import ast
import asyncio
from typing import Any

import pytest
from generator_helpers import resolve_options

from kforge.api import Generation, Proposal, RunContext, derive_seed
from kforge.backends.cuda import CudaBackend
from kforge.generators.tune import TuneGenerator, describe, find_sites, infer_range
from kforge.options import RecipeError
from kforge.problems import builtin_problems

PROBLEMS = {p.id: p for p in builtin_problems()}
MATMUL = PROBLEMS["matmul"].solutions()["triton"].read_text()

CUDA = '''import torch
from torch.utils.cpp_extension import load_inline

source = r"""
#define BLOCK_SIZE 256
constexpr int TILE = 32;
const int eps_scale = 3;
__global__ void relu_kernel(const float* x, float* y, int n) {
    int i = blockIdx.x * BLOCK_SIZE + threadIdx.x;
    if (i < n) y[i] = x[i] > 0 ? x[i] : 0;
}
torch::Tensor relu(torch::Tensor x) {
    auto y = torch::empty_like(x);
    int n = x.numel();
    relu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
mod = load_inline(name="relu", cpp_sources="torch::Tensor relu(torch::Tensor x);", cuda_sources=source,
                  functions=["relu"])


class ModelNew(torch.nn.Module):
    def forward(self, x):
        return mod.relu(x)
'''

AUTOTUNED = '''import triton
import triton.language as tl

UNROLL = 4
EPS_SCALE = 3
_PRIVATE = 64
TILE: tl.constexpr = 32


@triton.autotune(configs=[triton.Config({"BLOCK_SIZE": 128}, num_warps=4, num_stages=2)], key=["n"])
@triton.jit
def k(x, n, BLOCK_SIZE: tl.constexpr):
    pass
'''


def tune(**options: Any) -> TuneGenerator:
    return TuneGenerator(**resolve_options(TuneGenerator, **options))


def ctx_for(backend: Any = None) -> RunContext:
    from kforge.backends.triton import TritonBackend

    return RunContext(seed=0, problems=list(PROBLEMS.values()), backend=backend or TritonBackend(), recipe={})


def ask(gen: TuneGenerator, ctx: RunContext, problem: str, n: int, **params: Any) -> list[Generation]:
    proposals = [Proposal(id=f"{problem}:s{k}", problem_id=problem, step=k,
                          seed=derive_seed(0, "best-of-n", problem, k), params=dict(params)) for k in range(n)]
    return asyncio.run(gen.generate(proposals, ctx))


def test_sites_in_the_matmul_solution() -> None:
    sites = {(s.name, s.value, s.kind) for s in find_sites(MATMUL)}
    assert sites == {("BLOCK_M", 64, "block"), ("BLOCK_N", 64, "block"), ("BLOCK_K", 32, "block"),
                     ("GROUP_M", 8, "block"), ("num_warps", 4, "warps"), ("num_stages", 3, "stages")}


def test_sites_through_conditionals_and_min_caps() -> None:
    sites = find_sites(PROBLEMS["softmax"].solutions()["triton"].read_text())
    assert [(s.name, s.value) for s in sites] == [("BLOCK_SIZE", 4096), ("num_warps", 8), ("num_warps", 4)]
    assert "min bound" in sites[0].detail and "if branch" in sites[1].detail and "else branch" in sites[2].detail
    assert describe({sites[0]: 8192, sites[2]: 2}) == "BLOCK_SIZE[min] 4096->8192, num_warps[else] 4->2"


def test_sites_in_cuda_source_strings() -> None:
    sites = {(s.name, s.value, s.kind) for s in find_sites(CUDA)}
    assert sites == {("BLOCK_SIZE", 256, "cuda"), ("TILE", 32, "cuda"), ("threads", 256, "threads")}
    threads = next(s for s in find_sites(CUDA) if s.kind == "threads")
    assert max(infer_range(threads)) <= 1024


def test_module_constants_and_autotune_configs() -> None:
    names = {(s.name, s.value) for s in find_sites(AUTOTUNED)}
    assert {("UNROLL", 4), ("EPS_SCALE", 3), ("TILE", 32), ("BLOCK_SIZE", 128), ("num_warps", 4),
            ("num_stages", 2)} == names
    assert ("UNROLL", 4) not in {(s.name, s.value) for s in find_sites(AUTOTUNED, module_constants=False)}


def test_inferred_ranges() -> None:
    by_name = {s.name: s for s in find_sites(MATMUL)}
    assert infer_range(by_name["BLOCK_M"]) == [16, 32, 128, 256]
    assert infer_range(by_name["BLOCK_K"]) == [16, 64, 128], "dot tiles stay at 16 or more"
    assert infer_range(by_name["num_warps"]) == [1, 2, 8, 16]
    assert infer_range(by_name["num_stages"]) == [1, 2, 4, 5]


def test_variants_are_valid_distinct_and_describe_their_change() -> None:
    gen = tune()
    gens = ask(gen, ctx_for(), "matmul", 30)
    assert gens[0].label == "parent (unchanged)" and gens[0].code == MATMUL
    codes = [g.code for g in gens]
    assert all(c is not None for c in codes) and len(set(codes)) == 30
    for g in gens[1:]:
        assert g.code is not None
        ast.parse(g.code)
        assert g.label and "->" in g.label and g.meta["changes"]
        for change in g.label.split(", "):
            name, values = change.split(" ", 1)
            old, new = values.split("->")
            assert name.split("[")[0] in g.code and old != new


def test_deterministic_from_the_seeds() -> None:
    a = [g.code for g in ask(tune(), ctx_for(), "matmul", 12)]
    b = [g.code for g in ask(tune(), ctx_for(), "matmul", 12)]
    assert a == b


def test_never_the_same_variant_twice_and_exhaustion_is_reported() -> None:
    gen = tune(ranges={"num_warps": [2, 8], "BLOCK_SIZE": [512]}, include=["num_warps", "BLOCK_SIZE"],
               include_parent=False)
    gens = ask(gen, ctx_for(), "relu", 8)
    codes = [g.code for g in gens if g.code is not None]
    # BLOCK_SIZE in {1024 (as is), 512} x num_warps in {4 (as is), 2, 8}: 5 variants besides the parent
    assert len(codes) == len(set(codes)) == 5
    assert gens[-1].code is None and "every variant" in (gens[-1].error or "") and gens[-1].meta["exhausted"]


def test_recipe_ranges_include_and_exclude() -> None:
    gen = tune(ranges={"BLOCK_*": [128]}, exclude=["GROUP_M", "num_*"], include_parent=False, max_changes=1)
    for g in ask(gen, ctx_for(), "matmul", 3):
        assert g.code is not None
        [(name, (old, new))] = g.meta["changes"].items()
        assert name.startswith("BLOCK_") and new == 128


def test_bad_ranges_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match="generator.ranges.BLOCK_M"):
        tune(ranges={"BLOCK_M": [64, "big"]})


def test_parent_from_the_proposal() -> None:
    gens = ask(tune(), ctx_for(CudaBackend()), "relu", 4, parent_code=CUDA)
    assert all(g.code is not None and g.code != CUDA for g in gens)
    assert all(g.meta["parent"].startswith("parent") for g in gens)


def test_no_parent_and_no_tunables_are_clear_errors() -> None:
    # cumsum ships no CUDA example solution to start from
    assert "cuda" not in PROBLEMS["cumsum"].solutions()
    [g] = ask(tune(), ctx_for(CudaBackend()), "cumsum", 1)
    assert g.code is None and "no parent" in (g.error or "")
    [g] = ask(tune(), ctx_for(), "relu", 1, parent_code="class ModelNew:\n    pass\n")
    assert g.code is None and "no tunable constants" in (g.error or "")
