"""What a new user met (issue 21), each defect pinned by a test: nothing lost, no traceback.

Most tests drive the real CLI in-process (click's runner, built-in plugins only); the few that run
a recipe start the real local judge on the CPU with one candidate, a few seconds each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kforge.cli import cli

REPO = Path(__file__).resolve().parents[1]
RELU = REPO / "recipes" / "quickstart" / "candidates" / "relu"
BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary"


def kforge(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=True)


def no_traceback(res: Result) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output + res.stderr


def recipe(tmp_path: Path, body: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def replay_recipe(tmp_path: Path, candidates: Path, extra: str = "", ids: str = '["relu"]') -> Path:
    return recipe(tmp_path, f"""
[run]
out = "{tmp_path / 'runs'}"
[problems]
ids = {ids}
shapes = "small"
[generator]
name = "replay"
path = "{candidates}"
[search]
n = 1
[eval]
min_samples = 0
{extra}
""")


@pytest.fixture(autouse=True)
def _builtins(builtin_registry: Any) -> None:
    """Only the built-in plugins, as every test here expects."""


# -- 1. --run-dir at an existing run ---------------------------------------------------------------
def test_run_dir_holding_a_run_is_refused_and_untouched(tmp_path: Path) -> None:
    from kforge.store import DB_NAME, Store

    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    Store(run_dir, create=True).close()
    before = (run_dir / DB_NAME).read_bytes()
    res = kforge("run", REPO / "recipes" / "quickstart.toml", "--run-dir", run_dir, "--json")
    assert res.exit_code == 2, res.output + res.stderr
    assert "kforge resume" in res.stderr and str(run_dir) in res.stderr
    assert (run_dir / DB_NAME).read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == [DB_NAME]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["event"] for e in events] == ["error"]  # a --json stream ends properly


# -- 2. files that are not UTF-8 -------------------------------------------------------------------
def test_eval_of_a_binary_candidate_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    cand = tmp_path / "cand.py"
    cand.write_bytes(BINARY)
    res = kforge("eval", cand, "--problem", "relu")
    no_traceback(res)
    assert res.exit_code == 2 and "not UTF-8" in res.stderr and str(cand) in res.stderr


def test_run_of_a_binary_recipe_is_exit_2(tmp_path: Path) -> None:
    rec = tmp_path / "r.toml"
    rec.write_bytes(BINARY)
    res = kforge("run", rec, "--dry-run")
    no_traceback(res)
    assert res.exit_code == 2 and "not UTF-8" in res.stderr


def test_problems_list_of_a_binary_problem_file_is_exit_2(tmp_path: Path) -> None:
    prob = tmp_path / "p.py"
    prob.write_bytes(BINARY)
    res = kforge("problems", "list", "--source", prob)
    no_traceback(res)
    assert res.exit_code == 2 and "not UTF-8" in res.stderr


@pytest.mark.slow
def test_binary_replay_candidate_is_a_compile_error_and_the_run_goes_on(tmp_path: Path) -> None:
    cands = tmp_path / "cands"
    (cands / "relu").mkdir(parents=True)
    (cands / "relu" / "a_binary.py").write_bytes(BINARY)
    (cands / "relu" / "b_correct.py").write_text((RELU / "correct.py").read_text())
    rec = replay_recipe(tmp_path, cands).read_text().replace("n = 1", "n = 2")
    res = kforge("run", recipe(tmp_path, rec), "--json")
    no_traceback(res)
    events = [json.loads(line) for line in res.stdout.splitlines()]
    results = {e["label"]: e for e in events if e["event"] == "result"}
    assert results["a_binary.py"]["status"] == "compile_error"
    assert "not UTF-8" in results["a_binary.py"]["error"]
    assert results["b_correct.py"]["status"] == "correct"
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "finished"
    assert res.exit_code == 0


# -- 3. unusable paths -----------------------------------------------------------------------------
def test_run_out_that_is_a_file_fails_in_the_dry_run_too(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for args in (["--dry-run"], ["--json"]):
        res = kforge("run", REPO / "recipes" / "quickstart.toml", "--set", f"run.out='{tmp_path / 'afile'}'", *args)
        no_traceback(res)
        assert res.exit_code == 2 and "run.out" in res.stderr, res.stderr


def test_report_out_unwritable_is_a_clear_error(tmp_path: Path) -> None:
    from kforge.store import Store

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Store(run_dir, create=True).close()
    (tmp_path / "afile").write_text("x")
    res = kforge("report", run_dir, "--out", tmp_path / "afile" / "sub" / "report.md")
    no_traceback(res)
    assert res.exit_code == 2 and "afile" in res.stderr


def test_a_kforge_db_that_is_not_a_database(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "kforge.db").write_text("not sqlite at all " * 100)
    (run_dir / "recipe.json").write_text("{}")
    for args in (["report", run_dir], ["resume", run_dir]):
        res = kforge(*args)
        no_traceback(res)
        assert res.exit_code == 2 and "not a kforge database" in res.stderr, res.stderr


# -- 4. a missing API key --------------------------------------------------------------------------
def test_missing_api_key_stops_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    out = tmp_path / "runs"
    for args in (["--dry-run"], ["--json"]):
        res = kforge("run", REPO / "recipes" / "hosted.toml", "--set", f"run.out='{out}'", *args)
        no_traceback(res)
        assert res.exit_code == 2 and "ANTHROPIC_API_KEY" in res.stderr, res.stderr
    assert not out.exists()  # no run directory
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["event"] for e in events] == ["error"] and "ANTHROPIC_API_KEY" in events[0]["message"]
    # replaying a cache needs no key
    res = kforge("run", REPO / "recipes" / "hosted.toml", "--set", "generator.replay_only=true",
                 "--set", f"generator.cache='{tmp_path}'", "--dry-run")
    assert res.exit_code == 0, res.stderr


def test_engine_failure_mid_run_ends_the_json_stream(tmp_path: Path) -> None:
    """A run that fails after it started still ends its stream with error and run_finished."""
    import asyncio

    from kforge import events as E
    from kforge.engine import Engine
    from kforge.recipe import load_recipe

    rec = load_recipe(replay_recipe(tmp_path, RELU / "correct.py"))
    engine = Engine(rec)
    seen: list[dict[str, Any]] = []
    engine.bus.subscribe(seen.append)

    async def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("the generator broke")

    engine.generator.generate = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        asyncio.run(engine.run())
    kinds = [e["event"] for e in seen]
    assert kinds[-2:] == [E.ERROR, E.RUN_FINISHED] and seen[-1]["status"] == "failed"
    assert "the generator broke" in seen[-2]["message"]


# -- 5. live output --------------------------------------------------------------------------------
def test_plain_lines_show_run_dir_first_and_each_verdict_and_progress() -> None:
    from rich.console import Console

    from kforge.output import PlainLines

    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    lines = PlainLines(console, ["relu"], "t", total=4)
    lines({"event": "run_started", "run_dir": "/x/run-1", "ts": 0})
    lines({"event": "result", "problem": "relu", "candidate": "c0001", "label": "a.py", "status": "correct",
           "speedup": 1.5, "ts": 1})
    text = console.export_text()
    assert text.splitlines()[0] == "run directory: /x/run-1"
    assert "relu c0001 (a.py): correct speedup 1.50x" in text
    assert "1/4 judged" in text


def test_live_table_prints_each_verdict_and_progress() -> None:
    from rich.console import Console

    from kforge.output import LiveTable

    console = Console(record=True, width=200, file=open("/dev/null", "w"), force_terminal=True)  # noqa: SIM115
    live = LiveTable(["relu"], console, "t", total=3)
    with live:
        live({"event": "run_started", "run_dir": "/x/run-2", "ts": 0})
        live({"event": "result", "problem": "relu", "candidate": "c0001", "label": "a.py",
              "status": "incorrect", "guard": "mismatch", "error": "wrong", "ts": 1})
        assert "1/3 judged" in live.progress_line()
        assert "elapsed" in live.progress_line() and "ETA" in live.progress_line()
    text = console.export_text()
    assert "run directory: /x/run-2" in text and "relu c0001 (a.py): incorrect [mismatch] wrong" in text


# -- 6. replay folder with nothing for the selection ------------------------------------------------
def test_replay_folder_without_files_for_the_problems_says_why(tmp_path: Path) -> None:
    cands = tmp_path / "cands"
    (cands / "softmax").mkdir(parents=True)
    (cands / "softmax" / "a.py").write_text("x = 1\n")
    res = kforge("run", replay_recipe(tmp_path, cands), "--dry-run")
    no_traceback(res)
    assert res.exit_code == 2 and "no candidate files" in res.stderr and "relu" in res.stderr
    # some problems without files: a warning, the run goes on
    res = kforge("run", replay_recipe(tmp_path, cands, ids='["relu", "softmax"]'), "--dry-run")
    assert res.exit_code == 0 and "warning" in res.stderr and "relu" in res.stderr


# -- 7. validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "word"), [
    ("budget.wall_clock_s=-10", "at least"),
    ("eval.atol=nan", "finite"),
    ("eval.rtol=inf", "finite"),
    ("search.n=100000000000000000000", "too large"),
])
def test_bad_values_are_refused(setting: str, word: str) -> None:
    res = kforge("run", REPO / "recipes" / "quickstart.toml", "--set", setting, "--dry-run", "--json")
    no_traceback(res)
    assert res.exit_code == 2 and word in res.stderr, res.stderr


def test_dry_run_json_is_valid_json() -> None:
    res = kforge("run", REPO / "recipes" / "quickstart.toml", "--dry-run", "--json")
    assert res.exit_code == 0
    json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))


def test_top_level_key_is_not_called_a_table(tmp_path: Path) -> None:
    res = kforge("run", recipe(tmp_path, 'seed = 1\n[run]\nname = "x"\n'), "--dry-run")
    assert res.exit_code == 2
    assert "unknown table" not in res.stderr and "top-level key 'seed'" in res.stderr and "[run]" in res.stderr


def test_all_mistakes_reported_at_once(tmp_path: Path) -> None:
    rec = recipe(tmp_path, '[run]\nsed = 1\n[eval]\ntrials = "x"\natol = nan\n[budget]\nwall_clock_s = -1\n'
                           '[search]\nnn = 3\n')
    res = kforge("run", rec, "--dry-run")
    assert res.exit_code == 2
    for part in ("run.sed", "eval.trials", "eval.atol", "budget.wall_clock_s", "search.nn", "generator.path"):
        assert part in res.stderr, (part, res.stderr)
    assert "6 problems" in res.stderr


def test_missing_plugin_names_where_it_lives() -> None:
    res = kforge("run", REPO / "recipes" / "ttt.toml", "--dry-run")
    assert res.exit_code == 2 and "plugins/kforge-hf" in res.stderr, res.stderr


def test_eval_result_without_a_guard_prints_no_none(tmp_path: Path) -> None:
    from kforge.cli import _print_result
    from kforge.runtime import protocol as P

    res = P.EvalResult(request_id="r", problem_id="p", status=P.INFRA_ERROR, error="judge error: boom")
    from rich.console import Console

    console = Console(record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    _print_result(res, console)
    text = console.export_text()
    assert "[None]" not in text and "judge error: boom" in text


# -- 9. plots in the default install ----------------------------------------------------------------
def test_readme_quickstart_installs_the_plots() -> None:
    line = next(x for x in (REPO / "README.md").read_text().splitlines() if "kforge run recipes/quickstart" in x
                and "pip install" in x)
    extras = line.split("-e '.[", 1)[1].split("]", 1)[0].split(",")
    assert "report" in extras


# -- 10. streams -----------------------------------------------------------------------------------
def test_data_on_stdout_for_every_command(tmp_path: Path) -> None:
    cand = tmp_path / "c.py"
    cand.write_text("this is not python(\n")
    res = kforge("eval", cand, "--problem", "relu")
    assert res.exit_code == 1 and "compile_error" in res.stdout, (res.stdout, res.stderr)
    for args in (["problems", "list"], ["plugins"], ["cache", "path"]):
        res = kforge(*args)
        assert res.exit_code == 0 and res.stdout.strip(), args


def test_best_over_time_ends_at_the_tables_figures() -> None:
    from kforge.metrics import ProblemSummary
    from kforge.report import best_over_time

    retimed, plain, none = ProblemSummary("a"), ProblemSummary("b"), ProblemSummary("c")
    retimed.curve, retimed.best_speedup = [(6.0, 1.2), (30.0, 2.0)], 1.5  # the re-timing reported 1.5
    plain.curve, plain.best_speedup = [(12.0, 0.8)], 0.8
    none.curve, none.best_speedup = [(12.0, 3.0)], None  # the re-timing found it incorrect
    series = best_over_time({"a": retimed, "b": plain, "c": none}, 60.0)
    assert series["a"] == ([0.1, 0.5, 1.0], [1.2, 2.0, 1.5])
    assert series["b"][1][-1] == 0.8
    assert math.isnan(series["c"][1][-1])


def test_report_answer_on_stdout(tmp_path: Path) -> None:
    from kforge.store import Store

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Store(run_dir, create=True).close()
    res = kforge("report", run_dir, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.stderr
    assert "wrote" in res.stdout and str(tmp_path / "rep") in res.stdout


@pytest.mark.slow
def test_eval_against_a_broken_problem_file_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    prob = tmp_path / "broken_problem.py"
    prob.write_text("import torch\n\n\nclass Model(torch.nn.Module):\n    def forward(self, x):\n"
                    "        raise RuntimeError('the reference is broken')\n\n\n"
                    "def get_inputs():\n    return [torch.randn(4)]\n\n\ndef get_init_inputs():\n    return []\n")
    res = kforge("eval", RELU / "correct.py", "--problem", prob)
    no_traceback(res)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "the reference is broken" in res.stderr and str(prob) in res.stderr
    assert "[None]" not in res.stdout + res.stderr


@pytest.mark.slow
def test_run_against_a_broken_problem_file_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    prob = tmp_path / "broken_problem.py"
    prob.write_text("import torch\n\n\nclass Model(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return torch.relu(x) + undefined_name\n\n\n"
                    "def get_inputs():\n    return [torch.randn(4, 8)]\n\n\ndef get_init_inputs():\n    return []\n")
    (tmp_path / "cands" / "broken_problem").mkdir(parents=True)
    (tmp_path / "cands" / "broken_problem" / "c.py").write_text((RELU / "correct.py").read_text())
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[run]\nname = "bp"\nout = "{tmp_path / "runs"}"\n[problems]\nsource = "{prob}"\n'
                      f'[generator]\nname = "replay"\npath = "{tmp_path / "cands"}"\n[search]\nname = "best-of-n"\nn = 1\n')
    res = kforge("run", recipe)
    no_traceback(res)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "NameError: name 'undefined_name' is not defined" in res.stderr and "[None]" not in res.stderr


def test_a_forced_stop_still_names_the_run_directory(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from kforge import cli as cli_module

    class Engine:
        run_dir = Path("/runs/r-1")
        stops: list[str] = []

        def request_stop(self, reason: str) -> None:
            self.stops.append(reason)

    class Console:
        def print(self, *a: Any, **k: Any) -> None:
            pass

    exits: list[int] = []
    monkeypatch.setattr(cli_module.os, "_exit", exits.append)
    engine = Engine()
    on_sigint = cli_module._interrupt_handler(engine, Console())
    on_sigint()
    assert engine.stops == ["interrupted"] and exits == []
    on_sigint()  # the second: forced, at once
    assert exits == [130]
    err = capsys.readouterr().err
    assert "the run is in /runs/r-1" in err and "kforge resume /runs/r-1" in err
