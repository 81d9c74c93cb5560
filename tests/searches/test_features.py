"""MAP-Elites features: built-in bins on real kernels, features loaded by name, cell keys."""

from __future__ import annotations

import pytest
import search_helpers as H

from kforge.options import RecipeError
from kforge.problems import builtin_problems
from kforge.searches import features as F

SOLUTIONS = {p.id: p.solutions()["triton"].read_text() for p in builtin_problems() if "triton" in p.solutions()}

CUDA = '''import torch
from torch.utils.cpp_extension import load_inline

source = r"""
#include <mma.h>
#define BLOCK_SIZE 256
__global__ void k1(const float* x, float* y, int n) { nvcuda::wmma::fill_fragment(f, 0.0f); }
__global__ void k2(const float* x, float* y, int n) { }
torch::Tensor run(torch::Tensor x) {
    k1<<<(x.numel() + 255) / 256, 256>>>(x.data_ptr<float>(), x.data_ptr<float>(), x.numel());
    return x;
}
"""
mod = load_inline(name="m", cpp_sources="torch::Tensor run(torch::Tensor x);", cuda_sources=source, functions=["run"])


class ModelNew(torch.nn.Module):
    def forward(self, x):
        return mod.run(x)
'''


def test_builtin_features_bin_real_solutions() -> None:
    tile, tc, kernels, warps = (F.FEATURES[n] for n in ("tile_size", "tensor_cores", "kernels", "warps"))
    matmul, relu = SOLUTIONS["matmul"], SOLUTIONS["relu"]
    assert F.tile_values(matmul) == [64, 64, 32]  # BLOCK_M, BLOCK_N, BLOCK_K (GROUP_M is not a tile)
    assert tile.labels[tile(matmul, {})] == "64-127"
    assert tile.labels[tile(relu, {})] == "1024-4095"  # BLOCK_SIZE = 1024
    assert tc(matmul, {}) == 1 and tc(relu, {}) == 0
    assert kernels(matmul, {}) == 1 and warps.labels[warps(matmul, {})] == "4-7"
    # CUDA: the block size from #define and the launch, wmma as tensor cores, two __global__ kernels
    assert 256 in F.tile_values(CUDA)
    assert tile.labels[tile(CUDA, {})] == "256-1023" and tc(CUDA, {}) == 1 and kernels(CUDA, {}) == 2


def test_roofline_and_code_size_bins() -> None:
    roof, size = F.FEATURES["roofline"], F.FEATURES["code_size"]
    assert [roof.labels[roof("", {"roofline_fraction": f})] for f in (None, 0.05, 0.2, 0.5, 0.9)] == \
        ["unknown", "<10%", "10-30%", "30-60%", ">=60%"]
    assert roof("", {"roofline_fraction": float("nan")}) == 0
    short = "x = 1\n# a comment\n\n" * 10  # comments and blank lines do not count
    assert size.labels[size(short, {})] == "<40"
    assert size.labels[size("\n".join(f"x{i} = {i}" for i in range(200)), {})] == "160-319"


def test_a_failing_feature_bins_to_zero_and_bins_are_clamped() -> None:
    def boom(code: str, result: object) -> int:
        raise ValueError("cannot read this")

    assert F.Feature("boom", ("a", "b"), boom)("x", {}) == 0
    assert F.Feature("big", ("a", "b"), lambda c, r: 9)("x", {}) == 1


def test_features_by_name_and_by_module_attribute() -> None:
    feats = F.get_features(["tile_size", *H.KNOB_FEATURES])
    assert [f.name for f in feats] == ["tile_size", "knob_a", "knob_b"]
    code = H.knob_module({"A": 5, "B": 1, "C": 2, "D": 3})
    cell = F.cell_of(feats, code, {})
    assert cell == (5, 2, 0)  # BLOCK=1024 in the launch; A=5 -> 4-5; B=1 -> 0-1
    assert F.parse_cell(F.cell_key(cell)) == cell
    assert F.describe_cell(feats, F.cell_key(cell)) == {"tile_size": "1024-4095", "knob_a": "4-5", "knob_b": "0-1"}
    assert F.n_cells(feats) == 7 * 4 * 4


@pytest.mark.parametrize(("spec", "message"), [
    ("tile_sise", "unknown feature 'tile_sise'. Did you mean 'tile_size'?"),
    ("search_helpers:nothing", "cannot load 'search_helpers:nothing'"),
    ("search_helpers:KNOBS", "is not a kforge.searches.features.Feature"),
])
def test_bad_feature_names_are_recipe_errors(spec: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("?", r"\?")):
        F.get_features([spec])


def test_a_feature_named_twice_is_an_error() -> None:
    with pytest.raises(RecipeError, match="names a feature twice"):
        F.get_features(["roofline", "roofline"])
