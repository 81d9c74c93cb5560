"""kforge problems list/show, and the problem loader on KernelBench-format folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kforge.problems import builtin_problems, load_problem_path
from kforge.runtime.meta import strip_metadata


def kforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kforge", *args], capture_output=True, text=True, timeout=120)


def test_the_suite_has_20_problems_over_three_levels_each_with_shapes_and_a_solution() -> None:
    problems = builtin_problems()
    assert len(problems) >= 20
    assert {p.level for p in problems} == {1, 2, 3}
    for p in problems:
        assert {"main", "small"} <= set(p.shapes) and p.shapes.get("heldout"), p.id
        assert p.flops_at("main") and p.bytes_at("main"), p.id
        assert "triton" in p.solutions(), p.id


def test_problems_show_prints_the_roofline_floor_for_a_named_gpu() -> None:
    proc = kforge("problems", "show", "softmax", "--device", "NVIDIA H100 80GB HBM3", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    floor = data["shape_detail"]["main"]["roofline_floor_ms"]
    # 4096 x 65536 fp32 read and written once at the H100's 3.35 TB/s datasheet bandwidth
    assert abs(floor - 2 * 4 * 4096 * 65536 / 3.35e12 * 1e3) < 1e-9


def test_problems_list_json_has_every_builtin() -> None:
    proc = kforge("problems", "list", "--json")
    assert proc.returncode == 0
    ids = {p["id"] for p in json.loads(proc.stdout)}
    assert ids == {p.id for p in builtin_problems()}


def test_a_kernelbench_folder_loads_with_levels_and_ids(tmp_path: Path) -> None:
    src = (Path(__file__).parents[1] / "src/kforge/problems/builtin/relu.py").read_text()
    plain = strip_metadata(src)  # a KernelBench file has no KFORGE literal
    (tmp_path / "level1").mkdir()
    (tmp_path / "level1" / "19_ReLU.py").write_text(plain)
    (tmp_path / "level1" / "helpers.py").write_text("x = 1\n")  # not a problem: skipped
    (problem,) = load_problem_path(tmp_path)
    assert problem.id == "level1/19_ReLU" and problem.level == 1
    assert problem.shapes == {"main": {}} and problem.shape("small") == {}
    proc = kforge("problems", "list", "--source", str(tmp_path))
    assert proc.returncode == 0 and "level1/19_ReLU" in proc.stdout


def test_held_out_shapes_never_reach_a_prompt() -> None:
    for p in builtin_problems():
        shown = strip_metadata(p.source)
        assert "KFORGE" not in shown and "heldout" not in shown
        compile(shown, p.path, "exec")  # still valid Python
