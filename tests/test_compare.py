"""The output comparison (kforge.runtime.problem.compare): chunked float64 passes, so its memory stays
bounded for GPU-sized outputs, must decide exactly as one pass over the whole tensor would."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from kforge.runtime import problem as PR  # noqa: E402
from kforge.runtime.problem import Mismatch, compare  # noqa: E402


def _outcome(out, ref, atol=1e-4, rtol=1e-4):
    try:
        return ("ok",) + compare(out, ref, atol, rtol, "cpu")
    except Mismatch as exc:
        return (exc.guard, str(exc), exc.max_abs, exc.max_rel)


def _cases():
    g = torch.Generator().manual_seed(7)
    ref = torch.randn(1000, generator=g) * torch.logspace(-3, 2, 1000)
    near = ref * (1 + 1e-6 * torch.randn(1000, generator=g))
    over = ref.clone()
    over[[3, 500, 999]] += 1.0  # three elements, in three different chunks of 100
    nan_out = ref.clone()
    nan_out[[10, 810]] = float("nan")
    ref_inf = ref.clone()
    ref_inf[[5, 605]] = float("inf")
    out_inf_ok = ref_inf.clone()  # inf where the reference is inf: not an error
    tiny = torch.rand(1000, generator=g) * 5e-5  # every element under atol: only the L2 check sees zeros
    return [("near", near, ref), ("over", over, ref), ("nan", nan_out, ref), ("inf_both", out_inf_ok, ref_inf),
            ("zeros_on_tiny", torch.zeros_like(tiny), tiny), ("exact", ref.clone(), ref),
            ("empty", torch.empty(0), torch.empty(0))]


@pytest.mark.parametrize(("name", "out", "ref"), _cases(), ids=[c[0] for c in _cases()])
def test_chunked_comparison_decides_as_one_pass(monkeypatch, name, out, ref) -> None:
    whole = _outcome(out, ref)
    monkeypatch.setattr(PR, "COMPARE_CHUNK", 100)
    chunked = _outcome(out, ref)
    assert chunked[0] == whole[0] and chunked[1] == whole[1] if whole[0] != "ok" else chunked[0] == "ok"
    for a, b in zip(chunked[1 if whole[0] == "ok" else 2:], whole[1 if whole[0] == "ok" else 2:]):
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300) or \
            (math.isnan(a) and math.isnan(b))


def test_verdicts_of_the_cases() -> None:
    verdicts = {name: _outcome(out, ref)[0] for name, out, ref in _cases()}
    assert verdicts == {"near": "ok", "over": "tolerance", "nan": "nonfinite", "inf_both": "ok",
                        "zeros_on_tiny": "relative_error", "exact": "ok", "empty": "ok"}
    _, msg, max_abs, _ = _outcome(*_cases()[1][1:])
    assert msg.startswith("output: 3 of 1000 elements off by more than") and max_abs == pytest.approx(1.0, rel=1e-3)
    assert "has 2 NaN/Inf values" in _outcome(*_cases()[2][1:])[1]


def test_a_non_contiguous_output_is_compared_by_its_values(monkeypatch) -> None:
    monkeypatch.setattr(PR, "COMPARE_CHUNK", 7)
    ref = torch.randn(30, 40)
    out = ref.t().contiguous().t()  # same values, transposed strides
    assert not out.is_contiguous()
    assert compare(out, ref, 1e-4, 1e-4, "cpu") == (0.0, 0.0)
    bad = out.clone()
    bad[29, 39] += 1
    with pytest.raises(Mismatch, match="1 of 1200 elements"):
        compare(bad.t().contiguous().t(), ref, 1e-4, 1e-4, "cpu")
