"""kforge: generate, judge and search GPU kernels with LLMs.

The orchestrator (this package minus ``kforge.runtime``) imports no torch, Textual or Modal at
module level, so ``kforge --help`` is fast and runs on a laptop without a GPU. ``kforge.runtime``
(what ships to a GPU machine) needs only the standard library and torch, so this file imports
nothing eagerly.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from kforge.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(name)
