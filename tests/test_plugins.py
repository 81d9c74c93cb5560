"""The plugin manager: duplicate names, misspelt hooks, entry-point discovery, allow/block lists,
``kforge plugins`` and hook tracing. Third-party plugins here are real distributions (a module plus a
``.dist-info`` with an ``entry_points.txt``) written to tmp_path and found through sys.path."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

import kforge
from kforge import hookspecs
from kforge.hookspecs import hookimpl
from kforge.plugins import DEFAULT_PLUGINS, PluginError, _make_manager, build_registry, describe_plugins


class _Impl:
    def __init__(self, name: str) -> None:
        self.name = name
        self.description = f"fake {name}"
        self.options = ()


def _manager(*plugins: tuple[str, object], builtins: bool = False) -> pluggy.PluginManager:
    """A manager like kforge.plugins._make_manager builds, without entry points."""
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    if builtins:
        for modname in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(modname), name=modname)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


class BackendPlugin:
    def __init__(self, impl_name: str) -> None:
        self.impl_name = impl_name

    @hookimpl
    def register_backends(self, register):
        register(_Impl(self.impl_name))


class GeneratorPlugin:
    def __init__(self, impl_name: str) -> None:
        self.impl_name = impl_name

    @hookimpl
    def register_generators(self, register):
        register(_Impl(self.impl_name))


# -- duplicate names ------------------------------------------------------------------------------
def test_duplicate_name_names_both_plugins() -> None:
    pm = _manager(("plugin-alpha", BackendPlugin("fast")), ("plugin-beta", BackendPlugin("fast")))
    with pytest.raises(PluginError) as info:
        build_registry(pm)
    message = str(info.value)
    assert "plugin-alpha" in message and "plugin-beta" in message
    assert "'fast'" in message and "backend" in message


def test_duplicate_of_a_builtin_names_both_plugins() -> None:
    pm = _manager(("my-plugin", BackendPlugin("triton")), builtins=True)
    with pytest.raises(PluginError) as info:
        build_registry(pm)
    assert "kforge.backends.triton" in str(info.value) and "my-plugin" in str(info.value)


def test_same_name_in_different_kinds_is_allowed() -> None:
    reg = build_registry(_manager(("a", BackendPlugin("same")), ("b", GeneratorPlugin("same"))))
    assert reg.names("backends") == ["same"] and reg.names("generators") == ["same"]
    assert reg.items["backends"]["same"].plugin == "a"
    assert reg.items["generators"]["same"].plugin == "b"


def test_registration_without_a_name_is_an_error() -> None:
    class Nameless:
        @hookimpl
        def register_searches(self, register):
            register(object())

    with pytest.raises(PluginError, match="nameless-plugin registered a search without a name"):
        build_registry(_manager(("nameless-plugin", Nameless())))


def test_registry_get_unknown_suggests(builtin_registry) -> None:
    from kforge.options import RecipeError

    with pytest.raises(RecipeError, match=r"unknown search 'best-of-m'\. Did you mean 'best-of-n'\?"):
        builtin_registry.get("searches", "best-of-m")
    assert builtin_registry.get("backends", "triton").name == "triton"


def test_builtin_registry_contents(builtin_registry) -> None:
    assert "triton" in builtin_registry.names("backends")
    assert "replay" in builtin_registry.names("generators")
    assert "best-of-n" in builtin_registry.names("searches")
    assert "local" in builtin_registry.names("executors")
    assert {"builtin", "path"} <= set(builtin_registry.names("problem_sources"))
    for kind, table in builtin_registry.items.items():
        for reg in table.values():
            assert reg.plugin.startswith("kforge."), (kind, reg.plugin)


# -- misspelt hooks -------------------------------------------------------------------------------
def test_misspelt_hook_fails_check_pending() -> None:
    class Misspelt:
        @hookimpl
        def register_backend(self, register):  # the hook is register_backends
            raise AssertionError("never called")

    pm = _manager(("misspelt", Misspelt()), builtins=True)
    with pytest.raises(pluggy.PluginValidationError, match="register_backend"):
        pm.check_pending()


def _write_dist(root: Path, dist: str, module: str, body: str, version: str = "0.3.1") -> None:
    """A real installed distribution: ``module.py`` plus ``<dist>-<version>.dist-info``."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[kforge]\n{module} = {module}\n")


MISSPELT = """
from kforge.hookspecs import hookimpl

@hookimpl
def register_backend(register):
    pass
"""

GOOD = """
import click
from kforge.hookspecs import hookimpl
from kforge.options import Option


class EchoGenerator:
    name = "echo-test"
    description = "returns the same code every time"
    options = (Option("text", str, "x", "what to echo"),)


@hookimpl
def register_generators(register):
    register(EchoGenerator)


@hookimpl
def register_commands(cli):
    @cli.command("hello-test")
    def hello():
        "Say hello from a test plugin."
        click.echo("hello from the test plugin")
"""

BROKEN_IMPORT = """
raise ImportError("this plugin is broken on purpose")
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sys.path entry holding fake distributions, importable in this process and in children."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for key in ("KFORGE_LOAD_PLUGINS", "KFORGE_BLOCK_PLUGINS", "KFORGE_TRACE_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    return root


def _unique(tmp_path: Path, stem: str) -> str:
    return f"{stem}_{abs(hash(str(tmp_path))) % 10**8}"


def test_make_manager_rejects_an_entry_point_plugin_with_a_misspelt_hook(
        plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _unique(tmp_path, "kforge_misspelt")
    _write_dist(plugin_dir, "kforge-misspelt", module, MISSPELT)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "kforge-misspelt")
    with pytest.raises(PluginError, match="misspelt") as info:
        _make_manager()
    assert "register_backend" in str(info.value)


def test_make_manager_block_list_skips_a_broken_plugin(
        plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _unique(tmp_path, "kforge_misspelt")
    _write_dist(plugin_dir, "kforge-misspelt", module, MISSPELT)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "kforge-misspelt")
    monkeypatch.setenv("KFORGE_BLOCK_PLUGINS", "kforge-misspelt")
    pm = _make_manager()
    assert pm.get_plugin(module) is None
    assert pm.get_plugin("kforge.backends.triton") is not None


def test_make_manager_allow_list(plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _unique(tmp_path, "kforge_good")
    _write_dist(plugin_dir, "kforge-good-test", good, GOOD)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "")
    assert build_registry(_make_manager()).names("generators") == ["anthropic", "openai", "replay", "tune"]
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "kforge-good-test")
    reg = build_registry(_make_manager())
    assert "echo-test" in reg.names("generators")
    assert reg.items["generators"]["echo-test"].plugin == "kforge-good-test"
    info = {p["name"]: p for p in describe_plugins(reg)}["kforge-good-test"]
    assert info["builtin"] is False and info["version"] == "0.3.1"
    assert info["hooks"] == ["register_generators"]
    assert info["registers"]["generators"][0]["options"][0]["name"] == "text"


def test_make_manager_reports_a_plugin_that_fails_to_import(
        plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _unique(tmp_path, "kforge_broken")
    _write_dist(plugin_dir, "kforge-broken-test", module, BROKEN_IMPORT)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "kforge-broken-test")
    with pytest.raises(PluginError, match="failed to import") as info:
        _make_manager()
    assert "KFORGE_BLOCK_PLUGINS" in str(info.value)


# -- the CLI --------------------------------------------------------------------------------------
def test_plugins_json_lists_builtins_with_hooks_and_options(kforge_cli) -> None:
    proc = kforge_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    info = {p["name"]: p for p in json.loads(proc.stdout)}
    expected = {"kforge.backends.triton": "register_backends", "kforge.generators.replay": "register_generators",
                "kforge.searches.best_of_n": "register_searches", "kforge.executors.local": "register_executors",
                "kforge.problems.sources": "register_problem_sources"}
    for name, hook in expected.items():
        assert name in info, sorted(info)
        assert info[name]["builtin"] is True
        assert info[name]["version"] == kforge.__version__
        assert hook in info[name]["hooks"]
    assert all(p["builtin"] for p in info.values()), "KFORGE_LOAD_PLUGINS='' must load only the built-ins"
    replay = info["kforge.generators.replay"]["registers"]["generators"][0]
    assert replay["name"] == "replay" and replay["description"]
    path = {o["name"]: o for o in replay["options"]}["path"]
    assert path["required"] is True and path["type"] == "a string"
    local = info["kforge.executors.local"]["registers"]["executors"][0]
    device = {o["name"]: o for o in local["options"]}["device"]
    assert device["default"] == "auto" and device["choices"] == ["auto", "cuda", "cpu"]
    best = info["kforge.searches.best_of_n"]["registers"]["searches"][0]
    assert {o["name"]: o["default"] for o in best["options"]}["n"] == 4


def test_plugins_text_lists_options(kforge_cli) -> None:
    proc = kforge_cli("plugins")
    assert proc.returncode == 0, proc.stderr
    assert "kforge.generators.replay 0.1.0 (built-in)" in proc.stdout
    assert "generator: replay - " in proc.stdout
    assert "path: a string" in proc.stdout
    assert "device: a string (default 'auto')" in proc.stdout


def test_trace_plugins_prints_hook_calls(kforge_cli, isolated_env) -> None:
    proc = kforge_cli("plugins", env=dict(isolated_env, KFORGE_TRACE_PLUGINS="1"))
    assert proc.returncode == 0, proc.stderr
    assert "[kforge plugins] register_commands" in proc.stderr
    assert "[kforge plugins]" not in proc.stdout  # tracing never pollutes data on stdout
    quiet = kforge_cli("plugins")
    assert "[kforge plugins]" not in quiet.stderr


def test_trace_plugins_shows_the_registration_hooks(kforge_cli, isolated_env) -> None:
    proc = kforge_cli("plugins", env=dict(isolated_env, KFORGE_TRACE_PLUGINS="1"))
    assert proc.returncode == 0, proc.stderr
    assert "[kforge plugins] register_backends" in proc.stderr
    assert "kforge.backends.triton" in proc.stderr


def test_cli_misspelt_plugin_exits_2_and_block_list_recovers(plugin_dir: Path, tmp_path: Path, kforge_cli,
                                                            isolated_env) -> None:
    module = _unique(tmp_path, "kforge_misspelt_cli")
    _write_dist(plugin_dir, "kforge-misspelt-cli", module, MISSPELT)
    env = dict(isolated_env, PYTHONPATH=str(plugin_dir), KFORGE_LOAD_PLUGINS="kforge-misspelt-cli")
    proc = kforge_cli("plugins", env=env)
    assert proc.returncode == 2
    assert "misspelt" in proc.stderr and "register_backend" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = kforge_cli("plugins", env=dict(env, KFORGE_BLOCK_PLUGINS="kforge-misspelt-cli"))
    assert proc.returncode == 0, proc.stderr


def test_cli_third_party_plugin_adds_a_command_and_is_listed(plugin_dir: Path, tmp_path: Path, kforge_cli,
                                                             isolated_env) -> None:
    module = _unique(tmp_path, "kforge_good_cli")
    _write_dist(plugin_dir, "kforge-good-cli", module, GOOD)
    env = dict(isolated_env, PYTHONPATH=str(plugin_dir), KFORGE_LOAD_PLUGINS="kforge-good-cli")
    proc = kforge_cli("hello-test", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from the test plugin"
    listed = {p["name"]: p for p in json.loads(kforge_cli("plugins", "--json", env=env).stdout)}
    assert listed["kforge-good-cli"]["version"] == "0.3.1"
    assert set(listed["kforge-good-cli"]["hooks"]) >= {"register_generators"}
    # without the allow-list entry the plugin is not loaded
    assert kforge_cli("hello-test").returncode == 2


def test_python_path_helper_is_importable(plugin_dir: Path, tmp_path: Path) -> None:
    """Control for the fixtures above: a fake distribution really is visible to importlib.metadata."""
    from importlib.metadata import version

    module = _unique(tmp_path, "kforge_visible")
    _write_dist(plugin_dir, "kforge-visible-test", module, GOOD, version="9.9")
    assert version("kforge-visible-test") == "9.9"
    assert str(plugin_dir) in sys.path
