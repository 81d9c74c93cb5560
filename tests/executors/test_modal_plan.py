"""The modal executor's options, its dry-run plan (app, image, GPU, fan-out, cost estimate) and the
Modal recipe, all without Modal's service (and without importing the Modal client)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kforge.executors.modal import GPU_USD_PER_HOUR, ModalExecutor, ModalSettings
from kforge.options import RecipeError

REPO = Path(__file__).resolve().parents[2]
MODAL_RECIPE = REPO / "recipes" / "modal.toml"


def test_describe_prints_the_plan() -> None:
    plan = ModalExecutor(gpu="H100!", max_containers=6, est_seconds_per_candidate=30.0,
                         est_container_start_s=40.0, scaledown_window_s=20).describe(candidates=100)
    assert plan["app"] == "kforge" and plan["gpu"] == "H100!" and plan["gpu_policy"].startswith("pinned")
    image = plan["image"]
    assert image["base"].startswith("nvidia/cuda:") and "-devel-" in image["base"]
    assert set(image["pins"]) == {"torch", "triton", "numpy", "ninja"} and image["cutlass_headers"]
    assert image["torch_index_url"] is None and image["index_strategy"] == "PyPI only"
    assert "add_local_python_source" in image["kforge"]
    assert plan["fan_out"]["max_containers"] == 6 and "no batch barrier" in plan["fan_out"]["results"]
    assert plan["retries"]["for"].startswith("raised exceptions and timeouts")
    assert plan["timeout_s"]["per_attempt"] == 1800 and "restarts on each retry" in plan["timeout_s"]["note"]
    assert plan["container"]["block_network"] is True and plan["container"]["memory_mib"] == [16384, 32768]
    cost = plan["estimated_cost"]
    per_s = GPU_USD_PER_HOUR["H100"] / 3600
    assert cost["usd"] == round(100 * 30.0 * per_s + 6 * (40.0 + 20) * per_s, 2)
    assert cost["candidates"] == 100 and "estimate" in cost["note"]


def test_without_a_candidate_count_the_estimate_is_per_candidate() -> None:
    cost = ModalExecutor().describe()["estimated_cost"]
    assert cost["usd_per_candidate"] > 0 and cost["usd_per_100_candidates"] > 0 and cost["candidates"] is None


def test_a_gpu_list_needs_allow_fallback() -> None:
    with pytest.raises(RecipeError, match="allow_fallback"):
        ModalSettings.from_options({"gpu": ["H100!", "H200"]})
    plan = ModalExecutor(gpu=["H100!", "A100-80GB"], allow_fallback=True).describe(candidates=10)
    assert plan["gpu"] == ["H100!", "A100-80GB"] and plan["gpu_policy"].startswith("fallback")
    assert plan["estimated_cost"]["gpu_usd_per_hour"] == GPU_USD_PER_HOUR["H100"]  # the dearest: an upper bound
    assert ModalSettings.from_options({"gpu": ["L40S"]}).gpu == "L40S"  # a one-item list is a single GPU


@pytest.mark.parametrize("bad", ["H100; rm -rf /", "", "H100:x"])
def test_a_malformed_gpu_is_refused(bad: str) -> None:
    with pytest.raises(RecipeError, match="executor.gpu"):
        ModalSettings.from_options({"gpu": bad})


def test_prices_come_from_the_recipe_when_given() -> None:
    cost = ModalExecutor(gpu="H100!:2", gpu_usd_per_hour={"H100": 2.0}).describe(candidates=1)["estimated_cost"]
    assert cost["gpu_usd_per_hour"] == 4.0  # two GPUs per container
    unknown = ModalExecutor(gpu="X9000").describe(candidates=1)["estimated_cost"]
    assert unknown["usd"] is None and "gpu_usd_per_hour" in unknown["price_basis"]
    with pytest.raises(RecipeError, match="gpu_usd_per_hour.H100"):
        ModalSettings.from_options({"gpu_usd_per_hour": {"H100": "cheap"}})


# planning needs the generator's API key to be set (a run checks it before anything starts), not valid
PLACEHOLDER_KEYS = {"ANTHROPIC_API_KEY": "placeholder", "OPENAI_API_KEY": "placeholder"}


def test_the_modal_recipe_validates_and_plans(modal_registry, monkeypatch) -> None:
    from kforge.engine import Engine

    for key, value in PLACEHOLDER_KEYS.items():
        monkeypatch.setenv(key, value)
    from kforge.recipe import load_recipe

    recipe = load_recipe(MODAL_RECIPE, registry=modal_registry)
    executor = recipe.tables["executor"]
    assert executor["name"] == "modal" and executor["gpu"] == "H100!" and executor["allow_fallback"] is False
    assert recipe.tables["generator"]["name"] in ("anthropic", "openai")  # an API generator
    assert Path(recipe.tables["problems"]["source"]).is_dir()  # a KernelBench-format problem directory
    engine = Engine(recipe, registry=modal_registry)
    plan = engine.plan()["executor"]["plan"]
    assert plan["app"] == "kforge" and plan["gpu"] == "H100!" and plan["fan_out"]["max_containers"] == 8
    assert plan["estimated_cost"]["usd_per_candidate"] > 0
    with_budget = engine.executor.describe(candidates=recipe.tables["budget"]["candidates"])
    assert with_budget["estimated_cost"]["usd"] > 0


def test_planning_imports_neither_modal_nor_torch(isolated_env: dict[str, str]) -> None:
    code = f"""
import importlib, json, sys, pluggy
from kforge import hookspecs
from kforge.plugins import DEFAULT_PLUGINS, build_registry
from kforge.recipe import load_recipe
from kforge.engine import Engine
import kforge.commands.modal
pm = pluggy.PluginManager("kforge"); pm.add_hookspecs(hookspecs)
for name in (*DEFAULT_PLUGINS, "kforge.executors.modal"):
    if not pm.has_plugin(name):
        pm.register(importlib.import_module(name), name=name)
reg = build_registry(pm)
Engine(load_recipe({str(MODAL_RECIPE)!r}, registry=reg), registry=reg).plan()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("modal", "torch", "triton"))))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**isolated_env, **PLACEHOLDER_KEYS}, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_kforge_run_dry_run_prints_the_modal_plan(kforge_cli, isolated_env: dict[str, str]) -> None:
    from kforge.plugins import DEFAULT_PLUGINS

    if "kforge.executors.modal" not in DEFAULT_PLUGINS:
        pytest.skip("the modal executor is not in DEFAULT_PLUGINS yet")
    proc = kforge_cli("run", MODAL_RECIPE, "--dry-run", "--json", env={**isolated_env, **PLACEHOLDER_KEYS},
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plan["event"] == "plan"
    executor = plan["executor"]["plan"]
    assert executor["gpu"] == "H100!" and executor["image"]["pins"]["torch"]
    assert executor["fan_out"]["max_containers"] == 8 and "estimate" in executor["estimated_cost"]["note"]


def test_the_image_carries_kforge_cutlass_for_cutlass_candidates(monkeypatch) -> None:
    """Cutlass candidates import ``kforge_cutlass`` for their include paths: where it is installed
    here, the image gets it as source beside kforge (CUTLASS_PATH there points at /opt/cutlass)."""
    monkeypatch.syspath_prepend(str(REPO / "plugins" / "kforge-cutlass" / "src"))
    settings = ModalSettings.from_options({})
    assert settings.image.cutlass
    assert settings.image.local_sources() == ["kforge", "kforge_cutlass"]
    image = ModalExecutor().describe()["image"]
    assert "kforge and kforge_cutlass" in image["kforge"] and "warning" not in image
    no_headers = ModalSettings.from_options({"cutlass": ""})
    assert no_headers.image.local_sources() == ["kforge"]


def test_the_plan_warns_when_kforge_cutlass_is_missing(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kforge_cutlass" else real(name, *a))
    image = ModalExecutor().describe()["image"]
    assert "kforge_cutlass" in image["warning"] and "would fail to import" in image["warning"]


def test_the_real_modal_client_builds_that_image(monkeypatch) -> None:
    """The image definition through Modal's own client (lazy: nothing is sent to Modal)."""
    modal = pytest.importorskip("modal")
    from kforge.executors.modal_app import build_image

    monkeypatch.syspath_prepend(str(REPO / "plugins" / "kforge-cutlass" / "src"))
    image = build_image(ModalSettings.from_options({}).image)
    assert isinstance(image, modal.Image)


def test_the_dry_run_prices_the_whole_run_under_its_budget(modal_registry, monkeypatch) -> None:
    """budget.candidates reaches the estimate; the tiers (CPU builds, a correctness GPU) are priced."""
    from kforge.engine import Engine

    for key, value in PLACEHOLDER_KEYS.items():  # planning checks that the generator's key is set
        monkeypatch.setenv(key, value)
    from kforge.recipe import load_recipe

    recipe = load_recipe(MODAL_RECIPE, registry=modal_registry)
    plan = Engine(recipe, registry=modal_registry).plan()["executor"]["plan"]
    cost = plan["estimated_cost"]
    per_s = GPU_USD_PER_HOUR["H100"] / 3600
    assert cost["candidates"] == 40 and cost["usd"] == round(40 * 45 * per_s + 8 * (60 + 60) * per_s, 2)
    assert not any(t.startswith("build:") for t in plan["tiers"])  # a Triton run builds nothing ahead
    tiered = ModalExecutor(correctness_gpu="L4", est_correct_fraction=0.25).describe(candidates=10, backend="cuda")
    by_tier = tiered["estimated_cost"]["usd_per_candidate_by_tier"]
    assert set(by_tier) == {"correctness", "timing", "build"}
    assert by_tier["correctness"] == round(45 * GPU_USD_PER_HOUR["L4"] / 3600, 4)
    assert by_tier["timing"] == round(0.25 * 45 * per_s, 4)
    assert [t.split(":")[0] for t in tiered["tiers"]] == ["build", "correctness", "timing"]
    assert "TORCH_CUDA_ARCH_LIST=8.9;9.0a" in tiered["tiers"][0]  # built for both GPUs that load it
    with pytest.raises(RecipeError, match="memory_limit_mib"):
        ModalSettings.from_options({"memory_mib": 8192, "memory_limit_mib": 4096})
    with pytest.raises(RecipeError, match="transport"):
        ModalSettings.from_options({"transport": "shm"})
