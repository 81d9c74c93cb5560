"""The plugin manager: built-ins and third-party plugins through the same hooks.

- Third-party plugins are found through the entry-point group ``kforge``.
- ``KFORGE_LOAD_PLUGINS=a,b`` loads only those distributions (empty: none).
- ``KFORGE_BLOCK_PLUGINS=a,b`` skips those distributions (a broken plugin can be turned off).
- ``KFORGE_TRACE_PLUGINS=1`` prints every hook call to stderr.
- Every implementation has a unique ``name`` per kind; a duplicate names both plugins.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from kforge import hookspecs
from kforge.options import RecipeError, close_match

KINDS = ("backends", "generators", "searches", "executors", "problem_sources", "loggers")
# plugins that ship in this repository's plugins/ folder, by the name a recipe gives them
FIRST_PARTY = {"hf": "plugins/kforge-hf", "ttt": "plugins/kforge-hf", "cutlass": "plugins/kforge-cutlass",
               "solutions": "plugins/kforge-example", "wandb": "plugins/kforge-wandb"}
SINGULAR = {"backends": "backend", "generators": "generator", "searches": "search", "executors": "executor",
            "problem_sources": "problem source", "loggers": "logger"}

DEFAULT_PLUGINS = (
    "kforge.backends.triton",
    "kforge.backends.cuda",
    "kforge.backends.auto",
    "kforge.generators.replay",
    "kforge.generators.openai",
    "kforge.generators.anthropic",
    "kforge.generators.tune",
    "kforge.searches.best_of_n",
    "kforge.searches.evolution",
    "kforge.searches.refine",
    "kforge.executors.local",
    "kforge.executors.modal",
    "kforge.problems.sources",
    "kforge.loggers",
)


class PluginError(Exception):
    """A plugin is broken (duplicate names, unknown hooks, failed import)."""


@dataclass
class Registration:
    kind: str
    name: str
    impl: Any
    plugin: str  # the plugin (module or distribution) that registered it


@dataclass
class Registry:
    pm: pluggy.PluginManager
    items: dict[str, dict[str, Registration]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Any:
        table = self.items.get(kind, {})
        if name not in table:
            known = ", ".join(sorted(table)) or "(none)"
            home = FIRST_PARTY.get(name)
            hint = "" if close_match(name, table) else (
                f" It comes from the plugin in {home}: install it with pip install -e {home}"
                f" (kforge plugins lists what is installed)." if home else
                " If it comes from a plugin, install that plugin (kforge plugins lists what is installed"
                + ("; KFORGE_LOAD_PLUGINS is set and may filter it out" if "KFORGE_LOAD_PLUGINS" in os.environ
                   else "") + ").")
            raise RecipeError(f"unknown {SINGULAR[kind]} {name!r}.{close_match(name, table)} "
                              f"Installed: {known}.{hint}")
        return table[name].impl

    def names(self, kind: str) -> list[str]:
        return sorted(self.items.get(kind, {}))


_REGISTRY: Registry | None = None


def _plugin_label(pm: pluggy.PluginManager, plugin: Any) -> str:
    if id(plugin) in _DIST_OF:
        return _DIST_OF[id(plugin)][0]
    return str(pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin)))


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for modname in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    allow = os.environ.get("KFORGE_LOAD_PLUGINS")
    block = _dist_names(os.environ.get("KFORGE_BLOCK_PLUGINS", ""))
    if allow is None:
        _load_entrypoints(pm, lambda dist: _norm(dist) not in block)
    elif allow.strip():
        wanted = _dist_names(allow)
        _load_entrypoints(pm, lambda dist: _norm(dist) in wanted and _norm(dist) not in block)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook kforge does not define (misspelt?): {exc}") from exc
    if os.environ.get("KFORGE_TRACE_PLUGINS"):
        def before(hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            print(f"[kforge plugins] {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

        def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            print(f"[kforge plugins] {hook_name} done", file=sys.stderr)

        pm.add_hookcall_monitoring(before, after)
    return pm


def _norm(name: str) -> str:
    """Distribution names compare as packaging normalises them (kforge_example == kforge-example)."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _dist_names(text: str) -> set[str]:
    return {_norm(n) for n in text.split(",") if n.strip()}


def _load_entrypoints(pm: pluggy.PluginManager, accept: Any) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="kforge"):
        dist = ep.dist.name if ep.dist is not None else ep.name
        if not accept(dist) or pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001
            raise PluginError(f"plugin {dist!r} (entry point {ep.name!r}) failed to import: "
                              f"{type(exc).__name__}: {exc}. Set KFORGE_BLOCK_PLUGINS={dist} to skip it.") from exc
        pm.register(plugin, name=ep.name)
        _DIST_OF[id(plugin)] = (dist, ep.dist.version if ep.dist is not None else None)


_DIST_OF: dict[int, tuple[str, str | None]] = {}


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    pm = pm or _make_manager()
    reg = Registry(pm)
    for kind in KINDS:
        reg.items[kind] = {}
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            label = _plugin_label(pm, impl.plugin)
            # Called one implementation at a time (not through pm.hook) so each registration is
            # credited to its plugin; argument pruning and tracing behave as pluggy's would.

            def register(obj: Any, _kind: str = kind, _label: str = label) -> None:
                name = getattr(obj, "name", None)
                if not name or not isinstance(name, str):
                    raise PluginError(f"plugin {_label} registered a {SINGULAR[_kind]} without a name: {obj!r}")
                table = reg.items[_kind]
                if name in table:
                    raise PluginError(f"two plugins register a {SINGULAR[_kind]} named {name!r}: "
                                      f"{table[name].plugin} and {_label}")
                table[name] = Registration(_kind, name, obj, _label)

            if os.environ.get("KFORGE_TRACE_PLUGINS"):
                print(f"[kforge plugins] register_{kind} -> {label}", file=sys.stderr)
            impl.function(**{a: register for a in impl.argnames if a == "register"})
    return reg


def get_registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None


def describe_plugins(reg: Registry) -> list[dict[str, Any]]:
    """Every plugin with its version and what it registers (for ``kforge plugins``)."""
    from importlib.metadata import PackageNotFoundError, version

    import kforge

    by_plugin: dict[str, dict[str, Any]] = {}
    for kind, table in reg.items.items():
        for r in table.values():
            entry = by_plugin.setdefault(r.plugin, {"name": r.plugin, "version": None, "builtin": False,
                                                    "hooks": set(), "registers": {}})
            entry["hooks"].add(f"register_{kind}")
            entry["registers"].setdefault(kind, []).append({
                "name": r.name, "description": getattr(r.impl, "description", ""),
                "options": [o.describe() for o in getattr(r.impl, "options", ())]})
    for name, entry in by_plugin.items():
        if name.startswith("kforge."):
            entry["builtin"], entry["version"] = True, kforge.__version__
        else:
            known = [v for d, v in _DIST_OF.values() if d == name]
            try:
                entry["version"] = known[0] if known else version(name)
            except PackageNotFoundError:
                entry["version"] = None
        entry["hooks"] = sorted(entry["hooks"])
    for plugin in reg.pm.get_plugins():  # plugins that only add commands
        name = _plugin_label(reg.pm, plugin)
        if name not in by_plugin and reg.pm.get_hookcallers(plugin):
            hooks = sorted(h.name for h in reg.pm.get_hookcallers(plugin) or [])
            by_plugin[name] = {"name": name, "version": None, "builtin": name.startswith("kforge."),
                               "hooks": hooks, "registers": {}}
    return sorted(by_plugin.values(), key=lambda e: (not e["builtin"], e["name"]))
