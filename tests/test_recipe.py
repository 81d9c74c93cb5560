"""Recipes: validation messages through the real CLI (exit code 2, file and key path named, no
traceback), override precedence, and the validator's building blocks called directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kforge.options import Option, OptionSet, RecipeError
from kforge.recipe import apply_override, load_recipe, parse_value

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = REPO / "recipes" / "quickstart" / "candidates"

# A minimal valid recipe: the replay generator needs a folder that exists.
VALID = f"""
[problems]
ids = ["relu"]

[generator]
name = "replay"
path = "{CANDIDATES.as_posix()}"
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def plan_of(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    plan = json.loads(lines[0])
    assert plan["event"] == "plan"
    return plan


# -- broken recipes through `kforge run --dry-run` ------------------------------------------------
BROKEN = {
    "unknown_table": (VALID + "\n[nosuch]\nx = 1\n", ["nosuch"]),
    "unknown_eval_key": (VALID + "\n[eval]\ntrails = 5\n", ["eval.trails", "'trials'"]),
    "wrong_type": (VALID + '\n[eval]\ntrials = "five"\n', ["eval.trials", "an integer", "five"]),
    "unknown_plugin": (VALID + '\n[search]\nname = "best-of-m"\n', ["search.name", "best-of-m", "'best-of-n'"]),
    "below_minimum": (VALID + "\n[eval]\ntrials = 2\n", ["eval.trials", "at least 5"]),
    "choice": (VALID + '\n[executor]\nname = "local"\ndevice = "gpu"\n', ["executor.device", "'cuda'"]),
    "list_item_type": ('[problems]\nids = ["relu", 3]\n[generator]\nname = "replay"\n'
                       f'path = "{CANDIDATES.as_posix()}"\n', ["problems.ids[1]"]),
    "required_key": ('[generator]\nname = "replay"\n', ["generator.path", "required"]),
    "invalid_toml": ("[eval\ntrials = 5\n", ["not valid TOML", "line 1"]),
    "missing_replay_path": ('[problems]\nids = ["relu"]\n[generator]\nname = "replay"\npath = "no/such/dir"\n',
                            ["generator.path", "no/such/dir", "does not exist"]),
    "unknown_problem_id": (VALID.replace('ids = ["relu"]', 'ids = ["relu", "nosuch"]'),
                           ["problems.ids", "nosuch"]),
}
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_recipe_exits_2_naming_file_and_key(case: str, tmp_path: Path, kforge_cli) -> None:
    text, expected = BROKEN[case]
    recipe = write(tmp_path, text, name=f"{case}.toml")
    proc = kforge_cli("run", recipe, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip() == ""  # errors go to stderr, never stdout
    assert f"{case}.toml" in proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr, f"{fragment!r} not in {proc.stderr!r}"


def test_unknown_plugin_suggests_the_close_name(tmp_path: Path, kforge_cli) -> None:
    proc = kforge_cli("run", write(tmp_path, VALID + '\n[search]\nname = "best-of-m"\n'), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Did you mean 'best-of-n'?" in proc.stderr


def test_missing_recipe_file_exits_2(tmp_path: Path, kforge_cli) -> None:
    proc = kforge_cli("run", tmp_path / "absent.toml", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "absent.toml" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_set_syntax_exits_2(tmp_path: Path, kforge_cli) -> None:
    recipe = write(tmp_path, VALID)
    for bad, fragment in (("eval.trials", "expected key.path=value"), ("trials=7", "must name a table"),
                          ("evl.trials=7", "Did you mean 'eval'?")):
        proc = kforge_cli("run", recipe, "--dry-run", "--set", bad, cwd=tmp_path)
        assert proc.returncode == 2, bad
        assert fragment in proc.stderr, (bad, proc.stderr)
        assert "Traceback" not in proc.stderr


# -- overrides through the CLI --------------------------------------------------------------------
def test_dry_run_json_prints_the_resolved_plan(tmp_path: Path, kforge_cli) -> None:
    plan = plan_of(kforge_cli("run", write(tmp_path, VALID), "--dry-run", "--json", cwd=tmp_path))
    assert plan["eval"]["trials"] == 5
    assert [p["id"] for p in plan["problems"]] == ["relu"]
    assert plan["generator"] == {"name": "replay", "path": str(CANDIDATES), "cycle": False}
    assert plan["run"]["name"] == "recipe"
    assert plan["executor"]["name"] == "local"
    assert not list(tmp_path.glob("runs*")), "a dry run must not create a run directory"


def test_set_overrides_the_recipe(tmp_path: Path, kforge_cli) -> None:
    recipe = write(tmp_path, VALID + "\n[eval]\ntrials = 6\n")
    plan = plan_of(kforge_cli("run", recipe, "--dry-run", "--json", "--set", "eval.trials=7",
                          "--set", "run.name=renamed", cwd=tmp_path))
    assert plan["eval"]["trials"] == 7
    assert plan["run"]["name"] == "renamed"


def test_env_var_overrides_the_recipe(tmp_path: Path, kforge_cli, isolated_env) -> None:
    recipe = write(tmp_path, VALID + "\n[eval]\ntrials = 6\n")
    env = dict(isolated_env, KFORGE__EVAL__TRIALS="9")
    plan = plan_of(kforge_cli("run", recipe, "--dry-run", "--json", env=env, cwd=tmp_path))
    assert plan["eval"]["trials"] == 9


def test_set_beats_env(tmp_path: Path, kforge_cli, isolated_env) -> None:
    recipe = write(tmp_path, VALID + "\n[eval]\ntrials = 6\n")
    env = dict(isolated_env, KFORGE__EVAL__TRIALS="9")
    plan = plan_of(kforge_cli("run", recipe, "--dry-run", "--json", "--set", "eval.trials=7", env=env, cwd=tmp_path))
    assert plan["eval"]["trials"] == 7


def test_bad_env_value_is_a_recipe_error(tmp_path: Path, kforge_cli, isolated_env) -> None:
    env = dict(isolated_env, KFORGE__EVAL__TRIALS="2")
    proc = kforge_cli("run", write(tmp_path, VALID), "--dry-run", env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "eval.trials" in proc.stderr and "at least 5" in proc.stderr


# -- load_recipe in-process -----------------------------------------------------------------------
def test_load_recipe_defaults_and_paths(tmp_path: Path, builtin_registry) -> None:
    (tmp_path / "cands").mkdir()
    recipe = write(tmp_path, '[generator]\nname = "replay"\npath = "cands"\n[eval]\nmax_timing_s = 5\n',
                   name="my-recipe.toml")
    rec = load_recipe(recipe, registry=builtin_registry, env={})
    assert rec.name == "my-recipe"
    assert rec.path == recipe
    t = rec.tables
    assert t["eval"]["trials"] == 5 and t["eval"]["warmup"] == 3
    assert t["eval"]["max_timing_s"] == 5.0 and isinstance(t["eval"]["max_timing_s"], float)
    assert t["run"] == {"name": "my-recipe", "seed": 0, "out": "runs"}
    # a path option is resolved against the recipe's folder, not the working directory
    assert t["generator"] == {"name": "replay", "path": str((tmp_path / "cands").resolve()), "cycle": False}
    assert rec.plugin("search") == ("best-of-n", {"n": 4, "temperature": None, "retime_winner": True,
                                                  "retime_trials": None, "retime_tolerance": 0.25})
    assert t["backend"] == {"name": "triton"}
    assert t["budget"] == {"candidates": None, "wall_clock_s": None, "tokens": None, "usd": None}
    # to_dict is a copy
    rec.to_dict()["eval"]["trials"] = 99
    assert rec.tables["eval"]["trials"] == 5


def test_load_recipe_relative_problem_source_is_resolved(tmp_path: Path, builtin_registry) -> None:
    recipe = write(tmp_path, '[problems]\nsource = "probs"\n[generator]\nname = "replay"\npath = "."\n')
    rec = load_recipe(recipe, registry=builtin_registry, env={})
    assert rec.tables["problems"]["source"] == str((tmp_path / "probs").resolve())
    rec = load_recipe(write(tmp_path, VALID), registry=builtin_registry, env={})
    assert rec.tables["problems"]["source"] == "builtin"


def test_load_recipe_precedence(tmp_path: Path, builtin_registry) -> None:
    recipe = write(tmp_path, VALID + "\n[eval]\ntrials = 6\nwarmup = 1\n")
    assert load_recipe(recipe, registry=builtin_registry, env={}).tables["eval"]["trials"] == 6
    env = {"KFORGE__EVAL__TRIALS": "9", "KFORGE__EVAL__WARMUP": "4", "KFORGE_UNRELATED": "x"}
    rec = load_recipe(recipe, registry=builtin_registry, env=env)
    assert (rec.tables["eval"]["trials"], rec.tables["eval"]["warmup"]) == (9, 4)
    rec = load_recipe(recipe, ["eval.trials=7"], registry=builtin_registry, env=env)
    assert (rec.tables["eval"]["trials"], rec.tables["eval"]["warmup"]) == (7, 4)


def test_load_recipe_without_a_file(builtin_registry) -> None:
    rec = load_recipe(None, [f"generator.path={json.dumps(str(CANDIDATES))}"], registry=builtin_registry, env={})
    assert rec.name == "run"
    assert rec.tables["generator"]["path"] == str(CANDIDATES)


@pytest.mark.parametrize(("text", "fragments"), [
    ("[nosuch]\n", ["unknown table [nosuch]", "Allowed tables"]),
    ("[evl]\ntrials = 5\n", ["Did you mean 'eval'?"]),
    ("eval = 3\n", ["eval must be a table"]),
    ("[eval]\ntrails = 5\n", ["eval.trails is not an option of [eval]", "Did you mean 'trials'?", "Allowed keys"]),
    ('[eval]\ntrials = "five"\n', ["eval.trials must be an integer, not 'five'"]),
    ("[eval]\ntrials = true\n", ["eval.trials must be an integer"]),
    ("[eval]\ntrials = 2\n", ["eval.trials is 2; it must be at least 5"]),
    ('[problems]\nshapes = "big"\n', ["problems.shapes is 'big'", "'small'"]),
    ('[search]\nname = "best-of-m"\n', ["unknown search 'best-of-m'", "Did you mean 'best-of-n'?"]),
    ("[search]\nname = 3\n", ["search.name must be a string"]),
    ("[search]\nn = 0\n", ["search.n is 0; it must be at least 1"]),
    ("[search]\nbeam = 2\n", ["search.beam is not an option of", "'best-of-n'", "Allowed keys: n, retime_tolerance, retime_trials, retime_winner, temperature"]),
    ("[eval\n", ["is not valid TOML"]),
])
def test_load_recipe_errors_name_the_file(tmp_path: Path, builtin_registry, text: str, fragments: list[str]) -> None:
    extra = "" if text.startswith(("[generator]", "[eval\n")) else f'\n[generator]\nname = "replay"\npath = "{CANDIDATES.as_posix()}"\n'
    recipe = write(tmp_path, text + extra, name="broken.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, registry=builtin_registry, env={})
    message = str(info.value)
    assert str(recipe) in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_plugin_key_names_the_plugin_kind_correctly(tmp_path: Path, builtin_registry) -> None:
    recipe = write(tmp_path, VALID + "\n[search]\nbeam = 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, registry=builtin_registry, env={})
    assert "not an option of search 'best-of-n'" in str(info.value)


def test_load_recipe_missing_file(tmp_path: Path, builtin_registry) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml", registry=builtin_registry, env={})


def test_env_override_error_names_the_variable(tmp_path: Path, builtin_registry) -> None:
    with pytest.raises(RecipeError, match="KFORGE__EVL__TRIALS"):
        load_recipe(write(tmp_path, VALID), registry=builtin_registry, env={"KFORGE__EVL__TRIALS": "7"})


def test_parse_value_and_apply_override() -> None:
    assert parse_value("7") == 7
    assert parse_value("1.5") == 1.5
    assert parse_value("false") is False
    assert parse_value('["a", "b"]') == ["a", "b"]
    assert parse_value("hello world") == "hello world"
    assert parse_value('"quoted"') == "quoted"
    raw: dict = {"eval": {"trials": 5}}
    apply_override(raw, "eval.trials=8")
    apply_override(raw, "executor.gpus=[0, 1]")
    apply_override(raw, "run.name = spaced ")
    assert raw == {"eval": {"trials": 8}, "executor": {"gpus": [0, 1]}, "run": {"name": "spaced"}}
    for bad in ("eval.trials", "trials=3", "nosuch.key=1"):
        with pytest.raises(RecipeError):
            apply_override({}, bad)
    with pytest.raises(RecipeError, match="is not a table"):
        apply_override({"eval": 3}, "eval.trials=5")


# -- Option.check and OptionSet.resolve -----------------------------------------------------------
def test_option_check_types() -> None:
    assert Option("n", int).check(3, "t.n") == 3
    with pytest.raises(RecipeError, match=r"t\.n must be an integer, not True"):
        Option("n", int).check(True, "t.n")
    with pytest.raises(RecipeError, match=r"t\.n must be an integer, not 1\.5"):
        Option("n", int).check(1.5, "t.n")
    coerced = Option("x", float).check(2, "t.x")
    assert coerced == 2.0 and isinstance(coerced, float)
    with pytest.raises(RecipeError, match="must be a number"):
        Option("x", float).check(True, "t.x")
    assert Option("b", bool).check(False, "t.b") is False
    with pytest.raises(RecipeError, match="true or false"):
        Option("b", bool).check("yes", "t.b")
    assert Option("s", str).check("a", "t.s") == "a"
    assert Option("u", (int, str)).check("x", "t.u") == "x"
    with pytest.raises(RecipeError, match="an integer or a string"):
        Option("u", (int, str)).check(1.0, "t.u")


def test_option_check_none_required_lists_choices_minimum() -> None:
    assert Option("n", int).check(None, "t.n") is None
    with pytest.raises(RecipeError):
        Option("n", int, required=True).check(None, "t.n")
    ids = Option("ids", list, item_type=str)
    assert ids.check(["a", "b"], "p.ids") == ["a", "b"]
    with pytest.raises(RecipeError, match=r"p\.ids\[1\] must be a string, not 2"):
        ids.check(["a", 2], "p.ids")
    gpus = Option("gpus", list, item_type=int)
    with pytest.raises(RecipeError, match=r"e\.gpus\[0\] must be an integer"):
        gpus.check([True], "e.gpus")
    assert gpus.type_name() == "a list of integers"
    shapes = Option("shapes", str, "auto", choices=("auto", "small", "main"))
    assert shapes.check("small", "p.shapes") == "small"
    with pytest.raises(RecipeError, match=r"p\.shapes is 'smal'; allowed: 'auto', 'small', 'main'\. Did you mean 'small'\?"):
        shapes.check("smal", "p.shapes")
    trials = Option("trials", int, 5, minimum=5)
    assert trials.check(5, "e.trials") == 5
    with pytest.raises(RecipeError, match=r"e\.trials is 4; it must be at least 5"):
        trials.check(4, "e.trials")
    desc = shapes.describe()
    assert desc == {"name": "shapes", "type": "a string", "default": "auto", "help": "",
                    "choices": ["auto", "small", "main"], "required": False}


def test_option_set_resolve() -> None:
    opts = OptionSet("search 'x'", (Option("n", int, 4), Option("path", str, None, "where", required=True)))
    assert opts.resolve({"name": "x", "path": "p"}, "search") == {"n": 4, "path": "p"}
    with pytest.raises(RecipeError, match=r"search\.path is required by search 'x': where"):
        opts.resolve({"name": "x"}, "search")
    with pytest.raises(RecipeError, match=r"search\.nn is not an option of search 'x'\. Did you mean 'n'\?"):
        opts.resolve({"nn": 3, "path": "p"}, "search")
    with pytest.raises(RecipeError, match=r"\(no options\)"):
        OptionSet("backend 'b'").resolve({"x": 1}, "backend")
