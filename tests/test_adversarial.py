"""Cheating candidates (tests/adversarial/*.py) must get the verdict their header names.

Each file starts with a header of comments:

    # expect: <status> <guard-or-rule>[|<another>]   the verdict, e.g. "rejected no-gc", "incorrect input_mutation"
    # problem: <built-in problem id>
    # backend: cuda                                 optional (default triton)
    # shape: {"dim": 4000000}                        optional, merged over the problem's small shape
    # gpu                                            optional: meaningful only on a CUDA GPU

The static checker (kforge.checks) runs first; a rejection there is the verdict ("rejected" with the
rule ids). Otherwise the real judge evaluates the candidate in its sandbox, on the CPU with Triton's
interpreter (a CUDA GPU for ``# gpu`` files, or for all of them with KFORGE_ADVERSARIAL_DEVICE=cuda),
and its status and guard are the verdict. Alternatives (``a|b``) are for exploits that two guards
are each designed to catch, where which one fires first depends on the allocator.

An exploit the current judge does not catch keeps its expectation and is listed in NOT_CAUGHT
(a strict xfail: the day it is caught, the test says so).
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kforge.checks import RULES, check_candidate

ADVERSARIAL = Path(__file__).parent / "adversarial"
RUNTIME_GUARDS = {"tolerance", "relative_error", "nonfinite", "nondeterministic", "output_shape", "output_dtype",
                  "output_type", "output_structure", "output_device", "input_mutation", "timed_output", "timer",
                  "profiler", "roofline", "crash", "timeout", "exception", "compile", "init", "protocol",
                  "library_op"}
FORCED_DEVICE = os.environ.get("KFORGE_ADVERSARIAL_DEVICE")  # "cuda": run every case on the GPU


@dataclass
class Case:
    path: Path
    status: str
    guards: tuple[str, ...]
    problem: str
    backend: str = "triton"
    shape: dict[str, Any] = field(default_factory=dict)
    gpu: bool = False

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def device(self) -> str:
        return FORCED_DEVICE or ("cuda" if self.gpu else "cpu")


def parse_case(path: Path) -> Case:
    header: dict[str, str] = {}
    gpu = False
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*(expect|problem|backend|shape):\s*(.+?)\s*$", line)
        if m:
            header[m.group(1)] = m.group(2)
        elif line.strip() == "# gpu":
            gpu = True
    status, _, guards = header["expect"].partition(" ")
    return Case(path=path, status=status, guards=tuple(guards.split("|")), problem=header["problem"],
                backend=header.get("backend", "triton"), shape=json.loads(header.get("shape", "{}")), gpu=gpu)


CASES = [parse_case(p) for p in sorted(ADVERSARIAL.glob("*.py"))]

# Exploits the current judge does not catch. The expectation stays what it should be; these are the
# judge's to-do list (see each reason for what it would need).
NOT_CAUGHT: dict[str, str] = {}
UNRELIABLE_ON_CPU: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks: list[Any] = []
        if case.device == "cuda":
            marks.append(pytest.mark.gpu)
        if case.name in NOT_CAUGHT:
            marks.append(pytest.mark.xfail(strict=True, reason=NOT_CAUGHT[case.name]))
        elif case.name in UNRELIABLE_ON_CPU and case.device == "cpu":
            marks.append(pytest.mark.xfail(strict=False, reason=UNRELIABLE_ON_CPU[case.name]))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


@pytest.fixture(scope="module")
def judge_for() -> Any:
    from kforge.runtime.judge import Judge

    judges: dict[str, Any] = {}

    def get(device: str) -> Any:
        if device not in judges:
            # On a GPU a spare sandbox starts (torch import, CUDA context) while the last case runs.
            judges[device] = Judge(device=device, keep_spare=device == "cuda")
        return judges[device]

    yield get
    for judge in judges.values():
        judge.close()


def evaluate(case: Case, judge_for: Any) -> tuple[str, set[str], str, Any]:
    """(status, guards or rules, detail, judge result or None) for one adversarial candidate."""
    from kforge.problems import builtin_problems
    from kforge.runtime import protocol as P

    source = case.path.read_text()
    violations = check_candidate(source, case.backend)
    if violations:
        return "rejected", {v.rule for v in violations}, "; ".join(map(str, violations)), None
    problem = {p.id: p for p in builtin_problems()}[case.problem]
    request = P.EvalRequest(
        request_id=f"adv-{case.name}", problem_id=problem.id, problem_source=problem.source,
        candidate_source=source, backend=case.backend, shape={**problem.shape("small"), **case.shape},
        dtype=problem.dtype, atol=problem.atol, rtol=problem.rtol, trials=5, warmup=1, min_samples=3,
        max_samples=10, max_timing_s=1.0, compile_timeout_s=180.0, run_timeout_s=60.0)
    result = judge_for(case.device).evaluate(request)
    return result.status, {result.guard or ""}, result.error or "", result


@pytest.mark.parametrize("case", _params())
def test_adversarial_candidate(case: Case, judge_for: Any) -> None:
    status, found, detail, result = evaluate(case, judge_for)
    assert status == case.status and found & set(case.guards), (
        f"{case.name}: expected {case.status} {'|'.join(case.guards)}, got {status} {sorted(found)}: {detail}")
    if case.status == "rejected" and case.guards[0] in RULES:
        assert result is None  # a static rule's rejection comes from the checker, before anything runs
    if case.name == "huge_output":  # megabytes on stdout/stderr: the judge keeps a bounded tail
        assert result is not None and len(result.log_tail or "") <= 8192
    if case.name == "forged_stdout":  # the fake result line was printed, and ignored
        assert result is not None and '"status": "correct"' in (result.log_tail or "")


def test_library_op_candidate_is_warned_statically() -> None:
    source = (ADVERSARIAL / "library_op.py").read_text()
    result = check_candidate(source)
    assert list(result) == []
    assert any(w.rule == "library-op" and "torch.softmax" in w.message for w in result.warnings)


def test_headers_are_complete_and_known() -> None:
    from kforge.problems import builtin_problems
    from kforge.runtime.protocol import STATUSES

    problems = {p.id for p in builtin_problems()}
    assert len(CASES) >= 20
    for case in CASES:
        assert case.path.read_text().startswith("# expect: "), case.name
        assert case.status in STATUSES and case.status != "correct", case.name
        assert case.problem in problems, case.name
        assert case.backend in ("triton", "cuda", "cutlass"), case.name
        for guard in case.guards:
            assert guard in RULES or guard in RUNTIME_GUARDS, f"{case.name}: unknown guard or rule {guard!r}"
        ast.parse(case.path.read_text())  # every file is valid Python
    assert set(NOT_CAUGHT) <= {c.name for c in CASES} and set(UNRELIABLE_ON_CPU) <= {c.name for c in CASES}


def test_every_static_rule_has_an_adversarial_candidate() -> None:
    expected = {g for c in CASES if c.status == "rejected" for g in c.guards if g in RULES}
    missing = set(RULES) - expected - {"needs-model-new", "needs-kernel"}  # covered by tests/test_checks.py
    assert not missing, f"no adversarial candidate for {sorted(missing)}"
