"""Helpers shared by the generator tests (kept out of conftest.py so tests can import them by name)."""

from __future__ import annotations

import importlib
from typing import Any

SECRET = "sk-loopback-SECRET-7f3a9c2e11d04b6b"
KEY_ENV = "KFORGE_TEST_API_KEY"
GENERATOR_MODULES = ("kforge.generators.openai", "kforge.generators.anthropic", "kforge.generators.tune")


def resolve_options(cls: Any, **given: Any) -> dict[str, Any]:
    """Options as the recipe validator would hand them over (defaults filled, values checked)."""
    from kforge.options import OptionSet

    return OptionSet(f"generator {cls.name!r}", tuple(cls.options)).resolve(given, "generator")


def registry_with(*extra_modules: Any) -> Any:
    """The built-in plugins plus this issue's generators plus ``extra_modules``, without entry points."""
    import pluggy

    from kforge import hookspecs
    from kforge.plugins import DEFAULT_PLUGINS, build_registry

    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in (*DEFAULT_PLUGINS, *(m for m in GENERATOR_MODULES if m not in DEFAULT_PLUGINS)):
        pm.register(importlib.import_module(name), name=name)
    for module in extra_modules:
        pm.register(module, name=getattr(module, "__name__", repr(module)))
    return build_registry(pm)
