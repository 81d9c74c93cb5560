"""Prompt assembly: sections, device figures, feedback, and researchers' template overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from kforge.backends.cuda import CudaBackend
from kforge.backends.triton import TritonBackend
from kforge.options import RecipeError
from kforge.problems import builtin_problems
from kforge.prompts import PLACEHOLDERS, PromptSettings, build_prompt, format_feedback
from kforge.runtime.meta import device_figures, roofline_floor_ms, strip_metadata

PROBLEMS = {p.id: p for p in builtin_problems()}
H100 = {"device": "NVIDIA H100 80GB HBM3", "device_kind": "cuda", "sm": "90", "sm_count": 132}


def test_first_attempt_prompt_has_every_part() -> None:
    problem = PROBLEMS["softmax"]
    prompt = build_prompt(problem, TritonBackend(), H100, {})
    user = prompt.user
    assert "expert GPU kernel engineer" in prompt.system and "triton" in prompt.system
    assert strip_metadata(problem.source).strip() in user, "the problem's source is quoted, blank lines included"
    assert "KFORGE" not in user and "heldout" not in user, "held-out shapes are never shown to a model"
    assert TritonBackend().guidance().strip() in user
    assert "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" in user and "3350 GB/s" in user and "989 TFLOP/s" in user
    assert "class ModelNew(nn.Module)" in user and "real triton kernel" in user and "fall back" in user
    assert "single ```python fenced block" in user
    # the example is another problem with its solution (relu is the smallest), never this problem's own
    assert prompt.meta["example"] == "relu" and strip_metadata(PROBLEMS["relu"].source).strip() in user
    assert problem.solutions()["triton"].read_text().strip() not in user
    assert "Feedback" not in user and "current candidate" not in user
    assert "\n\n\n\n" not in user.replace(strip_metadata(problem.source), "")
    assert [m["role"] for m in prompt.messages()] == ["system", "user"]


def test_example_modes() -> None:
    problem = PROBLEMS["relu"]
    own = problem.solutions()["triton"].read_text().strip()
    selfp = build_prompt(problem, TritonBackend(), {}, {}, PromptSettings(example="self"))
    assert own in selfp.user and selfp.meta["example"] == "relu"
    none = build_prompt(problem, TritonBackend(), {}, {}, PromptSettings(example="none"))
    assert "example" not in none.user.lower().split("rules:")[0] and none.meta["example"] is None
    # the CUDA prompt's example is another problem's CUDA C++ solution (solutions/cuda), never a Triton one
    cuda = build_prompt(problem, CudaBackend(), {}, {})
    assert cuda.meta["example"] not in (None, "relu") and "load_inline" in cuda.user
    assert PROBLEMS[cuda.meta["example"]].solutions()["cuda"].read_text().strip() in cuda.user
    assert "@triton.jit" not in cuda.user


@pytest.mark.parametrize(("name", "bandwidth"), [
    ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000), ("NVIDIA H100 NVL", 3900), ("NVIDIA H200", 4800), ("NVIDIA H200 NVL", 4800),
    ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA A100-SXM4-40GB", 1555), ("NVIDIA A100 80GB PCIe", 1935),
    ("NVIDIA A100-PCIE-40GB", 1555), ("NVIDIA L40S", 864)])
def test_device_datasheet_figures(name: str, bandwidth: int) -> None:
    spec = device_figures(name)
    assert spec is not None and spec.memory_bandwidth_gbs == bandwidth
    # the roofline floor reads the same figure: a pure-bandwidth problem's floor is bytes / bandwidth
    floor = roofline_floor_ms({"device_kind": "cuda", "device": name}, None, 1e9, "float32")
    assert floor is not None and abs(floor - 1e9 / (bandwidth * 1e9) * 1e3) < 1e-12


def test_unknown_and_cpu_devices() -> None:
    assert device_figures("NVIDIA GeForce GTX 1080") is None
    # exact names only: a fragment ("H100") or a relative's name never borrows another device's figures
    assert device_figures("H100") is None and device_figures("NVIDIA H100 NVL X") is None
    assert device_figures("nvidia  h100 nvl").label == "H100 NVL"  # case and spacing aside
    # unknown device: no roofline floor (the guard does not apply), and the prompt states no figures
    assert roofline_floor_ms({"device_kind": "cuda", "device": "NVIDIA GeForce GTX 1080"}, 1e12, 1e9) is None
    user = build_prompt(PROBLEMS["relu"], TritonBackend(), {}, {}, PromptSettings(device="NVIDIA GeForce GTX 1080")).user
    assert "NVIDIA GeForce GTX 1080" in user and "Datasheet figures" not in user
    user = build_prompt(PROBLEMS["relu"], TritonBackend(), {"device": "cpu", "device_kind": "cpu"}, {}).user
    assert "Target device: an NVIDIA GPU (this run judges candidates on the CPU" in user
    user = build_prompt(PROBLEMS["relu"], TritonBackend(), {}, {}, PromptSettings(device="NVIDIA H200")).user
    assert "Target device: NVIDIA H200." in user and "4800 GB/s" in user


def test_refinement_prompt_with_feedback_and_diff_task() -> None:
    parent = PROBLEMS["relu"].solutions()["triton"].read_text()
    feedback = {"status": "incorrect", "mismatch": "max abs error 0.5 at [3, 17] (atol 1e-4)",
                "compile_error": "line 12\n  tl.sotre(...)\nAttributeError: sotre", "time_ms": 0.5,
                "baseline_ms": 0.4, "speedup": 0.8, "roofline_fraction": 0.31, "registers": 96}
    prompt = build_prompt(PROBLEMS["relu"], TritonBackend(), H100,
                          {"parent_code": parent, "feedback": feedback, "edit_format": "diff"})
    user = prompt.user
    assert parent.strip() in user and "current candidate to improve" in user
    assert "- status: incorrect" in user and "max abs error 0.5" in user and "    AttributeError: sotre" in user
    assert "candidate 0.5 ms, PyTorch eager 0.4 ms" in user and "speedup over PyTorch eager: 0.8x" in user
    assert "roofline fraction: 0.31" in user and "- registers: 96" in user
    assert "<<<<<<< SEARCH" in user and prompt.meta["edit_format"] == "diff"
    # with a parent the example is still another problem's, not a second copy of a solution
    assert user.count(parent.strip()) == 1


def test_feedback_excerpts_are_cut() -> None:
    log = "\n".join(f"error line {i}" for i in range(2000))
    text = format_feedback({"compile_error": log}, max_chars=500)
    assert "characters cut" in text and "error line 0" in text and "error line 1999" in text and len(text) < 700


def test_template_files_replace_sections(tmp_path: Path) -> None:
    (tmp_path / "rules.txt").write_text("House rules for $backend_name: no $$ spent.\n")
    (tmp_path / "device.txt").write_text("GPU: ${device_name}")
    system = tmp_path / "system.md"
    system.write_text("You write $backend_language kernels for problem $problem_id.")
    user = tmp_path / "user.txt"
    user.write_text("$problem\n\n$rules\n\n$device\n\n$example\n\nEnd with $task")
    settings = PromptSettings.from_options({"template_dir": str(tmp_path), "system_prompt": str(system),
                                            "user_template": str(user)})
    prompt = build_prompt(PROBLEMS["rowsum"], TritonBackend(), H100, {}, settings)
    assert prompt.system == "You write triton kernels for problem rowsum."
    assert "House rules for triton: no $ spent." in prompt.user and "GPU: NVIDIA H100 80GB HBM3" in prompt.user
    assert prompt.user.index("House rules") < prompt.user.index("GPU:") < prompt.user.index("End with Write")
    assert "Rules:\n" not in prompt.user and prompt.meta["templates"] == ["device", "rules", "system", "user"]


def test_kernelbench_style_single_template(tmp_path: Path) -> None:
    """A researcher's own one-file prompt (e.g. adapted from a KernelBench checkout)."""
    user = tmp_path / "kb.txt"
    user.write_text("You write custom CUDA kernels to replace the pytorch operators in the given architecture.\n"
                    "${problem_source}\nOptimize the architecture named Model with custom $backend_name operators! "
                    "Name your optimized output architecture ModelNew.\n")
    prompt = build_prompt(PROBLEMS["relu"], TritonBackend(), {}, {},
                          PromptSettings.from_options({"user_template": str(user)}))
    assert prompt.user.startswith("You write custom CUDA kernels") and strip_metadata(PROBLEMS["relu"].source) in prompt.user
    assert "Rules:" not in prompt.user


def test_unknown_placeholder_and_stray_dollar_are_recipe_errors(tmp_path: Path) -> None:
    bad = tmp_path / "user.txt"
    bad.write_text("$problem\n$problme_source\n")
    with pytest.raises(RecipeError, match=r"unknown placeholder \$problme_source.*\$problem_source"):
        PromptSettings.from_options({"user_template": str(bad)})
    bad.write_text("costs $ 5")
    with pytest.raises(RecipeError, match="lone"):
        PromptSettings.from_options({"user_template": str(bad)})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rulez.txt").write_text("x")
    with pytest.raises(RecipeError, match="rulez.txt names no prompt section"):
        PromptSettings.from_options({"template_dir": str(tmp_path / "d")})
    with pytest.raises(RecipeError, match="does not exist"):
        PromptSettings.from_options({"system_prompt": str(tmp_path / "missing.txt")})


def test_section_placeholders_only_in_the_user_template(tmp_path: Path) -> None:
    (tmp_path / "rules.txt").write_text("$problem")
    with pytest.raises(RecipeError, match="unknown placeholder"):
        PromptSettings.from_options({"template_dir": str(tmp_path)})


def test_every_documented_placeholder_is_filled(tmp_path: Path) -> None:
    user = tmp_path / "user.txt"
    user.write_text("\n".join(f"{name}=${name}" for name in PLACEHOLDERS))
    prompt = build_prompt(PROBLEMS["relu"], TritonBackend(), H100, {"parent_code": "x = 1\n", "feedback": "slow"},
                          PromptSettings.from_options({"user_template": str(user)}))
    assert "$" not in prompt.user.replace("$$", "")


def test_docs_list_every_placeholder() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "generators.md").read_text()
    missing = [name for name in PLACEHOLDERS if f"${name}" not in docs]
    assert not missing, f"docs/generators.md does not document {missing}"
