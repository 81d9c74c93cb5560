"""``kforge report`` and ``kforge compare`` on a real run's store."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from tui_runs import load_dump, make_run

from kforge.commands.report import compare_cmd, report_cmd
from kforge.report import compare_runs, run_figures, write_report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    replay = make_run(tmp_path_factory.mktemp("runs"))
    replay.close()
    return replay.run_dir


def test_figures_match_the_runs_own_summary(run: Path) -> None:
    """The report recomputes every figure from the results; they agree with the engine's summary."""
    f = run_figures(run)
    summary = load_dump()["meta"]["summary"]
    assert f["fast_p"] == summary["fast_p"]
    assert f["geomean_speedup"] == pytest.approx(summary["geomean_speedup"])
    assert f["correctness_rate"] == pytest.approx(summary["correctness_rate"])
    assert f["statuses"] == summary["statuses"]
    assert f["problems_solved"] == summary["problems_solved"] == 3
    assert f["candidates"] == f["results"] == 10
    best = {p["id"]: p for p in f["problems"]}
    for pid, b in summary["best"].items():
        assert best[pid]["best_candidate"] == b["candidate"]
        assert best[pid]["best_speedup"] == pytest.approx(b["speedup"])
    assert best["relu"]["tried"] == 5 and best["relu"]["correct"] == 1
    assert best["relu"]["time_to_first_correct_s"] == pytest.approx(8.976, abs=0.01)
    assert f["run"]["cpu_timings"] is True
    assert f["usage"] == {"tokens_in": 0, "tokens_out": 0, "tokens": 0, "cost_usd": 0.0}
    assert f["cpu_judge_time_s"] > 0 and f["gpu_time_s"] == 0
    assert f["budget"] == {"candidates": {"limit": 20, "used": 10}}
    assert f["provenance"]["kforge"] and f["provenance"]["device"]["device_kind"] == "cpu"


def test_report_writes_markdown_and_self_contained_html(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = write_report(run, tmp_path / "rep")
    assert out["plots_drawn"]
    md = Path(out["markdown"]).read_text()
    page = Path(out["html"]).read_text()
    assert "| problem | best vs eager |" in md
    assert "| layernorm | 0.15x |" in md
    for name in ("fast_p", "best_over_time", "speedup_distribution"):
        assert f"(plots/{name}.png)" in md
        assert (tmp_path / "rep" / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "src='http" not in page and "<link" not in page and "<script" not in page  # nothing to fetch
    assert "not GPU speedups" in page and "Provenance" in page


def test_report_command_json(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(report_cmd, [str(run), "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["geomean_speedup"] > 0 and "_series" not in data
    assert Path(data["written"]["html"]).is_file()
    assert "wrote" in result.stderr


def test_report_command_rejects_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(report_cmd, [str(tmp_path)])
    assert result.exit_code == 2
    assert "not a kforge run directory" in result.stderr


def test_compare_two_runs_on_shared_problems(run: Path, tmp_path: Path) -> None:
    """Run B stops before layernorm's results: A wins it; relu and softmax tie (same results)."""
    partial = make_run(tmp_path, name="partial", events=24)
    partial.close()
    data = compare_runs(run, partial.run_dir)
    assert data["shared"] == ["relu", "softmax", "layernorm"]
    rows = {r["problem"]: r for r in data["problems"]}
    assert rows["relu"]["winner"] == "tie" and rows["relu"]["ratio"] == pytest.approx(1.0)
    assert rows["layernorm"]["winner"] == "a" and rows["layernorm"]["b"] is None
    assert data["wins"] == {"a": 1, "b": 0, "tie": 2}
    assert data["a"]["solved"] == 3 and data["b"]["solved"] == 2
    result = CliRunner().invoke(compare_cmd, [str(run), str(partial.run_dir)])
    assert result.exit_code == 0, result.output
    assert "layernorm" in result.stdout and "wins A 1, B 0, ties 2" in result.stdout
    as_json = CliRunner().invoke(compare_cmd, [str(run), str(partial.run_dir), "--json"])
    assert json.loads(as_json.stdout)["wins"]["a"] == 1
