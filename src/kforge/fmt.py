"""How figures are written as text, everywhere: the live table, the summary, reports, the dashboard.

One module so that a figure reads the same on every screen. A speedup never shows as ``0.00x``
when it is not zero: CPU runs (Triton's interpreter) measure speedups of 0.001x-0.01x, and those
keep two significant digits.
"""

from __future__ import annotations

import math
from typing import Any


def _digits(s: float) -> str:
    if s == 0:
        return "0"
    if abs(s) < 0.1:
        return f"{s:.2g}"
    return f"{s:.2f}" if abs(s) < 10 else f"{s:.1f}"


def speedup(s: float | None) -> str:
    """``1.23x``; ``0.0026x`` under 0.1x (two significant digits); ``12.3x`` from 10x; ``-`` for none."""
    if s is None or math.isnan(s):
        return "-"
    return _digits(s) + "x"


def ratio(r: float | None) -> str:
    """A ratio of two speedups (``B / A``): the same digits as a speedup, without the ``x``."""
    return "-" if r is None or math.isnan(r) else _digits(r)


def pct(f: float | None, small: bool = False) -> str:
    """A fraction as a percentage: ``42%``; with ``small``, one decimal under 10% (``2.5%``)."""
    if f is None:
        return "-"
    if small and abs(f) < 0.1:
        return f"{100 * f:.1f}%"
    return f"{100 * f:.0f}%"


def ms(x: float | None) -> str:
    """Milliseconds, four significant digits: ``0.01234``, ``1.234``, ``1234``."""
    return "-" if x is None else f"{x:.4g}"


def seconds(s: float | None) -> str:
    """A duration: ``12.3s``, ``4m05s``, ``2h03m``."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def number(x: Any) -> str:
    """A plain figure: ints as they are, floats with four significant digits, ``-`` for none."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def fraction(f: float | None) -> str:
    """A share in [0, 1] with two decimals (fast_p): ``0.67``."""
    return "-" if f is None else f"{f:.2f}"
