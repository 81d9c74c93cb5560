"""KernelBench interoperability: ``kforge problems check`` on small KernelBench-format problems (CPU),
the classification of a check's results, KernelBench's baseline JSON and its fast_p, and level-4
problems that need a model download."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kforge import kernelbench as kb
from kforge.metrics import fast_p
from kforge.options import RecipeError
from kforge.problems import load_problem_path
from kforge.store import Store

REPO = Path(__file__).resolve().parents[1]


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


# A few ms a call on a CPU (above the judge's 1 ms wall-clock floor), and forward reads a module
# constant: the candidate must see the shape's value too.
RELU = src("""
    import torch
    import torch.nn as nn

    batch_size = 512
    dim = 1024
    scale = 2.0


    class Model(nn.Module):
        def forward(self, x):
            return torch.relu(x) * scale


    def get_inputs():
        return [torch.rand(batch_size, dim)]


    def get_init_inputs():
        return []
""")

# Every output is NaN, on every input distribution: the judge cannot compare anything.
ALWAYS_NAN = src("""
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def forward(self, x):
            return torch.full_like(x, float("nan"))


    def get_inputs():
        return [torch.rand(4, 8)]


    def get_init_inputs():
        return []
""")

# A fresh random draw in forward: the reference disagrees with itself on the same inputs.
NOISY = src("""
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)


    def get_inputs():
        return [torch.rand(4, 8)]


    def get_init_inputs():
        return []
""")

# KernelBench level 4's pattern: a Hugging Face config and model fetched by name, at import time.
DOWNLOAD = src("""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_name = "gpt2"
    config = AutoConfig.from_pretrained(model_name)


    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = AutoModelForCausalLM.from_pretrained(model_name, config=config)

        def forward(self, x):
            return self.model(x).logits


    def get_inputs():
        return [torch.randint(0, 10, (1, 8))]


    def get_init_inputs():
        return []
""")


def write_level(root: Path, level: int, files: dict[str, str]) -> Path:
    d = root / f"level{level}"
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


# Imports of textual or modal fail in the child: the check must not need them (the GPU machine has neither).
_NO_TUI = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('textual', 'modal'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, _Block())
sys.argv = ['kforge'] + sys.argv[1:]
from kforge.cli import main
main()
"""


def kforge_cli(*args: str) -> Result:
    """The command line in this process (cheap): exit code, stdout and stderr apart."""
    from kforge.cli import cli

    return CliRunner().invoke(cli, list(args))


def kforge_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _NO_TUI, "problems", "check", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


FAST = ("--set", "eval.min_samples=10", "--set", "eval.max_samples=10", "--set", "eval.max_timing_s=1",
        "--set", "eval.warmup=1")


def test_check_judges_each_problem_against_itself_and_says_why_not(tmp_path: Path) -> None:
    root = tmp_path / "KernelBench"
    write_level(root, 1, {"19_ReLU.py": RELU, "3_Nan.py": ALWAYS_NAN, "4_Noisy.py": NOISY})
    write_level(root, 4, {"1_gpt2.py": DOWNLOAD})
    out, eager = tmp_path / "check.jsonl", tmp_path / "eager.json"
    proc = kforge_check(str(root), "--json", "--out", str(out), "--baseline-out", str(eager), *FAST)
    assert proc.returncode == 1, proc.stderr  # not every problem is judgeable
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    recs = {r["problem_id"]: r for r in lines if "problem_id" in r}
    summary = lines[-1]
    assert summary["summary"] and summary["problems"] == 4 and len(recs) == 4
    assert recs["level1/3_Nan"]["reason"] == "nonfinite" and "NaN" in recs["level1/3_Nan"]["detail"]
    assert recs["level1/4_Noisy"]["reason"] == "nondeterministic"
    assert recs["level4/1_gpt2"]["reason"] == "model_download"
    assert "from_pretrained" in recs["level4/1_gpt2"]["detail"] and recs["level4/1_gpt2"]["status"] is None
    assert "Traceback" not in proc.stderr
    # streamed: each problem's progress line on stderr, the data on stdout
    assert "NOT judgeable (nonfinite)" in proc.stderr and "level1/4_Noisy: NOT judgeable" in proc.stderr

    # resumed: what the file holds is not judged again; --budget-s 0 starts no judge: the table of the file
    write_level(root, 1, {"5_New.py": RELU})
    proc2 = kforge_check(str(root), "--out", str(out), "--budget-s", "0", "--problem", "level1/4_Noisy",
                         "--problem", "level4/1_gpt2", "--problem", "level1/5_New")
    assert proc2.returncode == 1
    assert "2 of 3 problems already checked" in proc2.stderr and "checking" not in proc2.stderr
    assert "level4/1_gpt2" in proc2.stdout and "model_download" in proc2.stdout
    assert "0 of 3 judgeable" in proc2.stdout and "1 not checked yet" in proc2.stdout
    assert len(kb.read_records(out)) == 4
    # --retry-failed: the failures are to judge again (the download is re-reported without judging)
    proc3 = kforge_check(str(root), "--out", str(out), "--budget-s", "0", "--retry-failed", "--json")
    left = json.loads(proc3.stdout.splitlines()[-1])["remaining"]
    assert left == 3 + (not recs["level1/19_ReLU"]["judgeable"])  # Nan, Noisy, New (and ReLU if it failed)

    relu = recs["level1/19_ReLU"]
    if relu["reason"] == "timing":
        pytest.skip(f"this machine is too busy for the judge's wall-clock timing guard: {relu['detail']}")
    assert relu["judgeable"] and relu["status"] == "correct" and relu["device_kind"] == "cpu"
    assert summary["judgeable"] == 1 and summary["reasons"] == {"ok": 1, "nonfinite": 1, "nondeterministic": 1,
                                                                 "model_download": 1}
    assert relu["eager_ms"] > 0 and relu["eager"]["n"] == len(relu["eager"]["samples_ms"]) >= 3
    # KernelBench's baseline format, judgeable problems only
    base = json.loads(eager.read_text())
    assert set(base) == {"level1"} and set(base["level1"]) == {"19_ReLU.py"}
    entry = base["level1"]["19_ReLU.py"]
    assert set(entry) == {"mean", "std", "min", "max", "num_trials", "hardware", "device"}
    assert entry["min"] <= entry["mean"] <= entry["max"] and entry["num_trials"] == relu["eager"]["n"]
    assert kb.load_baseline(eager) == base


def test_baseline_from_records_writes_judgeable_problems_by_level_and_file() -> None:
    recs = [{"problem_id": "level1/19_ReLU", "level": 1, "file": "19_ReLU.py", "judgeable": True,
             "device": "NVIDIA H100 80GB HBM3", "device_kind": "cuda",
             "eager": {"samples_ms": [1.0, 3.0]}, "compile": {"default": {"samples_ms": [0.5, 0.5]}}},
            {"problem_id": "level2/1_X", "level": 2, "file": "1_X.py", "judgeable": False,
             "eager": {"samples_ms": [1.0]}, "compile": {}},
            {"problem_id": "relu", "level": None, "file": "relu.py", "judgeable": True,
             "eager": {"samples_ms": [1.0]}, "compile": {}}]
    assert kb.baseline_from_records(recs) == {"level1": {"19_ReLU.py": {
        "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "num_trials": 2, "hardware": "NVIDIA H100 80GB HBM3",
        "device": "cuda:0"}}}
    assert kb.baseline_from_records(recs, "default")["level1"]["19_ReLU.py"]["mean"] == 0.5
    assert kb.baseline_from_records(recs, "max-autotune") == {}


def test_check_filters_and_bad_usage(tmp_path: Path) -> None:
    root = tmp_path / "KernelBench"
    write_level(root, 1, {"19_ReLU.py": RELU})
    cases = {("--problem", "level1/19_RelU"): "Did you mean 'level1/19_ReLU'",
             ("--set", "generator.name=x"): "eval.KEY=VALUE or executor.KEY=VALUE",
             ("--set", "eval.trials=1"): "eval.trials is 1; it must be at least 5",
             ("--level", "3"): "no problems of level 3",
             ("--out", str(tmp_path / "a-file" / "x.jsonl")): "cannot write"}
    (tmp_path / "a-file").write_text("")  # a file where the --out folder should be
    for args, message in cases.items():
        res = kforge_cli("problems", "check", str(root), *args)
        assert res.exit_code == 2 and message in res.stderr, (args, res.stderr)
    res = kforge_cli("problems", "check", str(root / "nope"))
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_classify_reads_the_judges_verdicts() -> None:
    cases = {
        "out_of_memory": [{"status": "runtime_error", "guard": "exception",
                           "error": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 8.00 GiB"},
                          {"status": "infra_error", "error": "judge error: RuntimeError: CUDA error: out of memory"},
                          {"status": "infra_error", "guard": "memory_plan", "error": "the working set does not fit"}],
        "nondeterministic": [{"status": "incorrect", "guard": "nondeterministic", "error": "two runs disagree"},
                             {"status": "incorrect", "guard": "tolerance", "error": "3 of 10 elements off"}],
        "nonfinite": [{"status": "infra_error",
                       "error": "judge error: RuntimeError: the reference gives NaN/Inf on every input distribution"},
                      {"status": "incorrect", "guard": "nonfinite", "error": "output has 3 NaN/Inf values"}],
        "timeout": [{"status": "timeout", "guard": "timeout", "error": "timed out: run took over 60 s"}],
        "timing": [{"status": "rejected", "guard": "timer", "error": "reported median 0.052 ms but the judge saw"}],
        "model_download": [{"status": "infra_error", "error": "judge error: OSError: We couldn't connect to "
                            "'https://huggingface.co' to load this file"}],
        "inputs": [{"status": "infra_error", "error": "judge error: TypeError: get_inputs() missing 1 argument"}],
        "other": [{"status": "compile_error", "guard": "compile", "error": "SyntaxError: invalid syntax"}],
        "ok": [{"status": "correct"}],
    }
    for want, results in cases.items():
        for r in results:
            assert kb.classify(r)[0] == want, (want, r)


def test_memory_figures_prefer_the_plan_and_fall_back_to_the_old_keys() -> None:
    new = kb.memory_of({"memory": {"working_set_gib": 2.0, "judge_peak_gib": 5.0, "sandbox_peak_gib": 3.0,
                                   "peak_over_working_set": 3.5, "plan": {"sets": 2, "spares": 1}}})
    assert new["peak_gib"] == 8.0 and new["peak_over_working_set"] == 3.5 and new["plan"] == {"sets": 2, "spares": 1}
    old = kb.memory_of({"judge_peak_gib": 1.5, "sandbox_peak_gib": 0.5})
    assert old["peak_gib"] == 2.0 and old["working_set_gib"] is None and old["peak_over_working_set"] is None
    computed = kb.memory_of({"memory": {"working_set_gib": 0.5, "judge_peak_gib": 1.0, "sandbox_peak_gib": 0.5}})
    assert computed["peak_over_working_set"] == 3.0
    assert kb.memory_of({})["peak_gib"] is None


def test_baseline_statistics_are_kernelbenchs() -> None:
    # KernelBench's get_timing_stats: numpy mean, population std, min, max, each to 3 significant figures
    s = kb.kb_stats([1.0, 2.0, 3.0, 4.0], "NVIDIA H100 80GB HBM3", "cuda:0")
    assert s == {"mean": 2.5, "std": 1.12, "min": 1.0, "max": 4.0, "num_trials": 4,
                 "hardware": "NVIDIA H100 80GB HBM3", "device": "cuda:0"}
    assert kb.kb_stats([0.123456, 0.123456], None, None)["mean"] == 0.123


def test_load_baseline_rejects_what_is_not_one(tmp_path: Path) -> None:
    bad = {"x.json": "not json", "y.json": json.dumps({"lvl1": {}}),
           "z.json": json.dumps({"level1": {"1_A.py": {"mean": "fast"}}})}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(RecipeError, match="baseline"):
            kb.load_baseline(tmp_path / name)
    with pytest.raises(RecipeError, match="cannot read"):
        kb.load_baseline(tmp_path / "missing.json")


# A level of six problems in KernelBench's terms. By hand, with baseline means over runtimes:
#   1: correct, 2.0/1.0 = 2.0     2: correct, 1.0/2.0 = 0.5     3: correct, 3.0/2.0 = 1.5
#   4: incorrect (fast)           5: no result (counts as a failure)
#   6: correct, 1.0/0.25 = 4.0 but the baseline lacks it: left out of the count (n = 5)
FILES = ["1_A.py", "2_B.py", "3_C.py", "4_D.py", "5_E.py", "6_F.py"]
BASELINE = {"level1": {f: {"mean": m, "std": 0.0, "min": m, "max": m, "num_trials": 100, "hardware": "H100",
                           "device": "cuda:0"} for f, m in zip(FILES[:5], (2.0, 1.0, 3.0, 1.0, 1.0))}}
RESULTS = {"1_A.py": {"correctness": True, "runtime": 1.0}, "2_B.py": {"correctness": True, "runtime": 2.0},
           "3_C.py": {"correctness": True, "runtime": 2.0}, "4_D.py": {"correctness": False, "runtime": 0.1},
           "6_F.py": {"correctness": True, "runtime": 0.25}}
EXPECTED = {0.0: 3 / 5, 0.5: 2 / 5, 0.8: 2 / 5, 1.0: 2 / 5, 1.5: 1 / 5, 2.0: 0 / 5}  # "> p", strictly


def test_fast_p_is_kernelbenchs_and_kforges_agrees() -> None:
    for p, want in EXPECTED.items():
        assert kb.kernelbench_fast_p(RESULTS, BASELINE["level1"], FILES, p) == pytest.approx(want), p
    # kforge's run metric on the same problems (those the baseline has) and the same speedups
    aligned = FILES[:5]
    best = {f: {"status": "correct" if r["correctness"] else "incorrect",
                "speedup": BASELINE["level1"][f]["mean"] / r["runtime"]} for f, r in RESULTS.items() if f in aligned}
    for p, want in EXPECTED.items():
        assert fast_p(best, aligned, p) == pytest.approx(want), p
    assert kb.kernelbench_fast_p({}, {}, FILES, 1.0) == 0.0


def _result(pid: str, status: str, mean_ms: float | None, live: float | None) -> dict[str, object]:
    return {"request_id": pid, "problem_id": pid, "status": status, "speedup_vs_eager": live,
            "timing": {"mean_ms": mean_ms, "median_ms": mean_ms} if mean_ms else None}


def test_report_speedups_against_a_published_baseline(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = Store(run, create=True)
    for f in FILES:
        store.add_problem({"id": f"level1/{f[:-3]}", "name": f[:-3], "level": 1, "hash": "h",
                           "path": f"/somewhere/level1/{f}"}, "main")
    n = 0
    for f, r in RESULTS.items():
        pid = f"level1/{f[:-3]}"
        # a slower sample first: the fastest correct one is what counts
        status = "correct" if r["correctness"] else "incorrect"
        for t in (r["runtime"] * 2, r["runtime"]):
            n += 1
            store.add_result(f"c{n}", _result(pid, status, t, 1.7))
    store.close()
    base = tmp_path / "baseline.json"
    kb.write_baseline(base, BASELINE)
    data = kb.published_speedups(run, base)
    rows = {r["file"]: r for r in data["problems"]}
    assert rows["1_A.py"]["published_speedup"] == pytest.approx(2.0) and rows["1_A.py"]["live_speedup"] == 1.7
    assert rows["4_D.py"]["published_speedup"] is None and rows["6_F.py"]["baseline_ms"] is None
    assert data["aligned"] == 5 and data["hardware"] == ["H100"]
    assert data["fast_p"] == {f"{p:g}": pytest.approx(w) for p, w in EXPECTED.items()}
    res = kforge_cli("report", str(run), "--baseline", str(base), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["published_baseline"]["fast_p"]["1"] == pytest.approx(0.4)
    res = kforge_cli("report", str(run), "--baseline", str(base))
    assert res.exit_code == 0 and "level1/1_A.py" in res.stdout and "2.00x" in res.stdout and "p=1: 0.40" in res.stdout
    res = kforge_cli("report", str(run), "--baseline", str(tmp_path / "x"))
    assert res.exit_code == 2 and "cannot read baseline" in res.stderr


def test_a_problem_that_downloads_a_model_is_refused_before_a_run(tmp_path: Path) -> None:
    root = tmp_path / "KernelBench"
    write_level(root, 1, {"19_ReLU.py": RELU})
    write_level(root, 4, {"1_gpt2.py": DOWNLOAD})
    probs = {p.id: p for p in load_problem_path(root)}
    assert probs["level1/19_ReLU"].needs_download is None
    assert "AutoConfig.from_pretrained(...) at line 5" in str(probs["level4/1_gpt2"].needs_download)
    cands = tmp_path / "cands" / "level1"
    cands.mkdir(parents=True)
    (cands / "19_ReLU.py").write_text(RELU)  # the replay folder holds a file for the level-1 problem
    recipe = tmp_path / "kb.toml"
    recipe.write_text(f'[problems]\nsource = "{root}"\nlevel = 4\n[generator]\nname = "replay"\n'
                      f'path = "{tmp_path / "cands"}"\n')
    res = kforge_cli("run", str(recipe), "--dry-run")
    assert res.exit_code == 2 and "1 selected problem(s) need a model download" in res.stderr
    assert "level4/1_gpt2 (it downloads a model: AutoConfig.from_pretrained(...) at line 5)" in res.stderr
    res = kforge_cli("run", str(recipe), "--dry-run", "--set", "problems.level=1")
    assert res.exit_code == 0, res.stderr


def test_the_kernelbench_recipe_loads(tmp_path: Path) -> None:
    from kforge.recipe import load_recipe

    write_level(tmp_path, 1, {"19_ReLU.py": RELU})
    rec = load_recipe(REPO / "recipes" / "kernelbench.toml", [f"problems.source={tmp_path}"])
    assert rec.tables["problems"]["level"] == 1 and rec.tables["search"]["n"] == 1
