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


# -- the tolerance arbitration: honest reorderings pass against the exact answer, downgrades fail -------
def _wide(g, *shape):
    mag = torch.pow(10.0, torch.empty(shape).uniform_(-3, 2, generator=g))
    return mag * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)


def _tf32(x):  # fp32 rounded to TF32's 10-bit mantissa
    return ((x.view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def _blocked(a, b, bk=32):
    acc = torch.zeros(a.shape[0], b.shape[1])
    for k in range(0, a.shape[1], bk):
        acc += a[:, k:k + bk] @ b[k:k + bk]
    return acc


def _scan_with_carry(x, blk=256):
    out, carry = torch.empty_like(x), torch.zeros(x.shape[0])
    for k in range(0, x.shape[1], blk):
        c = torch.cumsum(x[:, k:k + blk], 1) + carry[:, None]
        out[:, k:k + blk], carry = c, c[:, -1]
    return out


def _verdict(out, ref, exact, atol=1e-4, rtol=1e-4):
    try:
        compare(out, ref, atol, rtol, "cpu")
        return "ok"
    except Mismatch:
        pass
    try:
        PR.compare_exact(out, ref, exact, atol, rtol)
        return "arbitrated"
    except Mismatch as exc:
        return exc.guard


def test_honest_reorderings_pass_and_precision_downgrades_fail_on_wide_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = _wide(g, 128, 512), _wide(g, 512, 128)
    ref, exact = a @ b, a.double() @ b.double()
    # the fp32 reference itself breaks the fixed elementwise rule against the exact answer here
    assert int(((ref.double() - exact).abs() > 1e-4 + 1e-4 * exact.abs()).sum()) > 0
    one_off = ref.clone()
    one_off[5, 5] *= 1.01
    verdicts = {"blocked": _verdict(_blocked(a, b), ref, exact),
                "tf32": _verdict(_tf32(a) @ _tf32(b), ref, exact),
                "bf16": _verdict((a.bfloat16() @ b.bfloat16()).float(), ref, exact),
                "one_element_1pct": _verdict(one_off, ref, exact)}
    assert verdicts == {"blocked": "arbitrated", "tf32": "tolerance", "bf16": "tolerance",
                        "one_element_1pct": "tolerance"}
    x = _wide(g, 64, 4096)
    ref, exact = torch.cumsum(x, 1), torch.cumsum(x.double(), 1)
    assert _verdict(_scan_with_carry(x), ref, exact) in ("ok", "arbitrated")
    assert _verdict(torch.cumsum(x.bfloat16(), 1).float(), ref, exact) == "tolerance"


def test_zeros_on_tiny_outputs_fail_the_arbitration_too() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4096, generator=g)
    ref, exact = torch.softmax(x, 1), torch.softmax(x.double(), 1)
    assert _verdict(torch.zeros_like(ref), ref, exact) in ("tolerance", "relative_error")


def test_the_arbitration_reads_outputs_from_another_device_a_chunk_at_a_time(monkeypatch) -> None:
    g = torch.Generator().manual_seed(2)
    a, b = _wide(g, 64, 512), _wide(g, 512, 64)
    ref, exact = a @ b, a.double() @ b.double()
    whole = PR.compare_exact(_blocked(a, b), ref, exact, 1e-4, 1e-4)
    monkeypatch.setattr(PR, "COMPARE_CHUNK", 1000)
    assert PR.compare_exact(_blocked(a, b), ref, exact, 1e-4, 1e-4) == pytest.approx(whole)


def test_the_input_digest_sees_any_change_and_depends_on_its_key() -> None:
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(1001, generator=g), torch.arange(7, dtype=torch.int64), 3, torch.randn(3, 5).t()]
    d = PR.digest(inputs, key=11)
    assert d == PR.digest([x.clone() if isinstance(x, torch.Tensor) else x for x in inputs], key=11)
    assert d != PR.digest(inputs, key=12)
    for i, change in [(0, lambda t: t.__setitem__(1000, t[1000] + 1e-6)), (1, lambda t: t.__setitem__(0, 1)),
                      (3, lambda t: t.__setitem__((0, 0), 0.0))]:
        changed = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        change(changed[i])
        assert [a == b for a, b in zip(PR.digest(changed, key=11), d)] == [k != i for k in range(4)]
    assert PR.digest([torch.zeros(4)], 1) != PR.digest([torch.zeros(2, 2)], 1)  # shape counts
    small = PR.DIGEST_CHUNK
    try:  # a change in any chunk, and a swap of two chunks, changes the digest
        PR.DIGEST_CHUNK = 100
        t = torch.randn(1000, generator=g)
        swapped = torch.cat([t[100:200], t[:100], t[200:]])
        assert PR.digest([t], 5) != PR.digest([swapped], 5)
    finally:
        PR.DIGEST_CHUNK = small


def test_only_near_misses_are_sent_to_the_arbitration() -> None:
    """A float64 forward for every failing candidate would cost GPU time where most candidates fail: only
    a miss that rounding could explain (few elements, or an L2 error near rtol) is arbitrated."""
    g = torch.Generator().manual_seed(0)
    a, b = _wide(g, 128, 512), _wide(g, 512, 128)
    ref = a @ b
    one_off = ref.clone()
    one_off[5, 5] *= 1.01

    def miss(out):
        with pytest.raises(Mismatch) as info:
            compare(out, ref, 1e-4, 1e-4, "cpu")
        return info.value.near_miss

    assert miss(_blocked(a, b)) is True  # 26 of 16384 elements: arbitrated (and passes)
    assert miss(one_off) is True  # one element: arbitrated (and fails there)
    assert miss(_tf32(a) @ _tf32(b)) is False  # most elements: failed without a float64 forward
    assert miss(torch.where(ref > 0, ref, 0.01 * ref)) is False  # a leaky ReLU of the answer
