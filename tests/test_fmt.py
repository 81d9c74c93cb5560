"""One formatting module for every screen: speedups never read 0.00x unless they are zero."""

from __future__ import annotations

import random

from kforge import fmt


def test_speedups_keep_two_significant_digits_under_a_tenth() -> None:
    assert [fmt.speedup(x) for x in (None, 0.0, 0.000412, 0.00258, 0.0026, 0.154, 1.5, 23.4)] == \
        ["-", "0x", "0.00041x", "0.0026x", "0.0026x", "0.15x", "1.50x", "23.4x"]
    assert fmt.ratio(0.0026) == "0.0026" and fmt.ratio(1.25) == "1.25" and fmt.ratio(None) == "-"


def test_a_non_zero_speedup_never_prints_as_zero() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        s = 10 ** rng.uniform(-7, 3)
        text = fmt.speedup(s)
        assert text.endswith("x") and float(text[:-1]) > 0, (s, text)
        assert abs(float(text[:-1]) - s) <= 0.051 * s, (s, text)  # and it says roughly how much


def test_times_percentages_durations() -> None:
    assert [fmt.ms(x) for x in (None, 0.012345, 1.23456, 1234.5)] == ["-", "0.01235", "1.235", "1234"]
    assert [fmt.pct(x) for x in (None, 0.0, 0.42, 1.0)] == ["-", "0%", "42%", "100%"]
    assert fmt.pct(0.025, small=True) == "2.5%" and fmt.pct(0.25, small=True) == "25%"
    assert [fmt.seconds(x) for x in (None, 12.34, 245, 7380)] == ["-", "12.3s", "4m05s", "2h03m"]
    assert fmt.fraction(2 / 3) == "0.67" and fmt.number(0.123456) == "0.1235" and fmt.number(3) == "3"
