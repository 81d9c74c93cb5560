"""The prompt a model gets: problem, backend guidance, an example, the device, the rules, feedback.

Every part is a :class:`string.Template` section that a researcher can replace with a file of their
own (``template_dir/<section>.txt``, or ``system_prompt`` / ``user_template`` for the two messages).
Templates use ``$name`` / ``${name}`` placeholders (``$$`` is a literal dollar sign), so C++ braces
and f-string braces in code need no escaping. An unknown placeholder is an error naming the file and
the placeholders that exist; :data:`PLACEHOLDERS` documents them.

The user message is the ``user`` template filled with the rendered sections; an empty section
(no example, no feedback) leaves no gap.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kforge import fmt
from kforge.options import RecipeError
from kforge.runtime.meta import device_figures, strip_metadata

if TYPE_CHECKING:
    from kforge.api import Backend
    from kforge.problems import Problem

SECTIONS = ("system", "user", "problem", "backend", "example", "device", "parent", "second_parent", "history",
            "feedback", "inspirations", "rules", "task")

PLACEHOLDERS: dict[str, str] = {
    # values, usable in every template
    "problem_id": "the problem's id",
    "problem_name": "the problem's name",
    "problem_source": "the PyTorch reference module (Model, get_inputs, get_init_inputs)",
    "problem_dtype": "the problem's dtype (float32, float16, bfloat16)",
    "backend_name": "the backend's name (triton, cuda)",
    "backend_language": "the backend's language",
    "backend_guidance": "the backend's own guidance text",
    "example_problem_source": "the example's reference module ('' without an example)",
    "example_solution": "the example's solution in the backend ('' without one)",
    "device_name": "the target device's name ('an NVIDIA GPU' when unknown)",
    "device_specs": "one line of datasheet figures (bandwidth, peak FLOP/s) or ''",
    "parent_code": "the candidate to improve ('' without one)",
    "feedback_text": "feedback on an earlier candidate, as lines ('' without any)",
    "second_parent_code": "a second program to combine with the parent (crossover; '' without one)",
    "history_text": "one line per earlier turn of a refinement chain ('' without any)",
    "inspirations_text": "other programs for the problem with their speedups ('' without any)",
    # sections, usable in the user template (each already rendered from its own template)
    "problem": "the rendered problem section",
    "backend": "the rendered backend section",
    "example": "the rendered example section ('' without an example)",
    "device": "the rendered device section",
    "parent": "the rendered parent section ('' without a parent)",
    "feedback": "the rendered feedback section ('' without feedback)",
    "second_parent": "the rendered crossover section ('' without a second parent)",
    "history": "the rendered history section ('' without history)",
    "inspirations": "the rendered inspirations section ('' without inspirations)",
    "rules": "the rendered rules section",
    "task": "the rendered task section (full module or SEARCH/REPLACE edits)",
}

DEFAULTS: dict[str, str] = {
    "system": (
        "You are an expert GPU kernel engineer. You replace PyTorch operators with custom $backend_name "
        "kernels that are correct to the reference's tolerance and as fast as the hardware allows. You think "
        "about memory traffic, parallelism and the roofline before writing code, and you answer with code "
        "that runs as written."
    ),
    "user": ("$problem\n\n$backend\n\n$example\n\n$device\n\n$inspirations\n\n$parent\n\n$second_parent\n\n"
             "$history\n\n$feedback\n\n$rules\n\n$task"),
    "problem": (
        "You are given this PyTorch reference (problem `$problem_id`: $problem_name, dtype $problem_dtype):\n\n"
        "```python\n$problem_source```"
    ),
    "backend": "$backend_guidance",
    "example": (
        "Here is an example of the expected format: a reference module\n\n```python\n$example_problem_source```\n\n"
        "and a $backend_name solution for it:\n\n```python\n$example_solution```"
    ),
    "device": "Target device: $device_name.$device_specs",
    "parent": "Here is the current candidate to improve:\n\n```python\n$parent_code```",
    "feedback": "Feedback on that candidate from the judge:\n$feedback_text",
    "second_parent": ("Here is a second program for the same problem. Combine the best ideas of both:\n\n"
                      "```python\n$second_parent_code```"),
    "history": "Earlier turns on this candidate, oldest first:\n$history_text",
    "inspirations": "Other programs written for this problem, with their measured speedups, for ideas:\n\n"
                    "$inspirations_text",
    "rules": (
        "Rules:\n"
        "- Define `class ModelNew(nn.Module)` with the same `__init__` and `forward` signatures as `Model`; it must "
        "return the same outputs (shapes, dtypes, values within tolerance) for every input `get_inputs()` makes.\n"
        "- Compute the result with a real $backend_name kernel that you write. Do not call `Model`, and do not fall "
        "back to PyTorch operators (torch.matmul, F.softmax, ...) for the computation itself; allocating outputs "
        "(torch.empty) and reshaping views is fine.\n"
        "- Keep the module self-contained: imports at the top, no testing code, no prints, no `if __name__ == "
        "'__main__'` block. Do not define `get_inputs` or `get_init_inputs`.\n"
        "- Do not cache outputs between calls, use extra CUDA streams or threads, or modify the inputs."
    ),
    "task_full": (
        "Write ModelNew. Answer with the complete Python module in a single ```python fenced block, and nothing "
        "after the block."
    ),
    "task_diff": (
        "Improve the current candidate. Answer with one or more edit blocks of this form, each copying the lines "
        "to change exactly (with their indentation) from the current candidate:\n\n"
        "<<<<<<< SEARCH\nlines copied exactly from the current candidate\n=======\nthe new lines\n>>>>>>> REPLACE\n\n"
        "Edits are applied in order; every SEARCH must match. To rewrite everything, answer instead with the "
        "complete module in a single ```python fenced block."
    ),
}

_VALUE_KEYS = ("problem_id", "problem_name", "problem_source", "problem_dtype", "backend_name", "backend_language",
               "backend_guidance", "example_problem_source", "example_solution", "device_name", "device_specs",
               "parent_code", "feedback_text", "second_parent_code", "history_text", "inspirations_text")


def _device_values(device: dict[str, Any], override: str | None) -> tuple[str, str]:
    name = override or device.get("device")
    kind = device.get("device_kind")
    spec = device_figures(name)
    if not name or kind == "cpu" and not override:
        label = "an NVIDIA GPU (this run judges candidates on the CPU, where timings are not GPU timings)" \
            if kind == "cpu" else "an NVIDIA GPU"
        return label, ""
    text = str(name)
    facts = []
    if device.get("sm") and not override:
        facts.append(f"sm_{device['sm']}")
    if device.get("sm_count") and not override:
        facts.append(f"{device['sm_count']} SMs")
    if facts:
        text += f" ({', '.join(facts)})"
    if spec is None:
        return text, ""
    parts = [f"memory bandwidth about {spec.memory_bandwidth_gbs:g} GB/s",
             f"peak about {spec.fp32_tflops:g} TFLOP/s FP32", f"{spec.tf32_tflops:g} TFLOP/s TF32 tensor core",
             f"{spec.bf16_tflops:g} TFLOP/s BF16/FP16 tensor core (dense)", f"{spec.l2_mb:g} MB L2"]
    if not (device.get("sm_count") and not override):
        parts.append(f"{spec.sm_count} SMs")
    return text, f" Datasheet figures ({spec.label}): " + ", ".join(parts) + "."


def format_feedback(feedback: dict[str, Any] | str | None, max_chars: int = 4000) -> str:
    """Feedback on an earlier candidate as lines a model can act on. Known keys first, in a fixed order;
    anything else as ``key: value``. Long texts (compile logs) are cut to ``max_chars``."""
    if not feedback:
        return ""
    if isinstance(feedback, str):
        return _cut(feedback, max_chars)
    fb = dict(feedback)
    lines: list[str] = []

    def take(key: str) -> Any:
        return fb.pop(key, None)

    status = take("status")
    if status:
        lines.append(f"- status: {status}")
    for key, label in (("compile_error", "compile error"), ("error", "error"), ("edit_error", "edit error"),
                       ("mismatch", "mismatch")):
        value = take(key)
        if value:
            text = _cut(value if isinstance(value, str) else json.dumps(value, default=str), max_chars)
            lines.append(f"- {label}:\n" + _indent_block(text) if "\n" in text else f"- {label}: {text}")
    time_ms, base_ms = take("time_ms"), take("baseline_ms")
    speedup, roofline = take("speedup"), take("roofline_fraction")
    if time_ms is not None or base_ms is not None:
        parts = []
        if time_ms is not None:
            parts.append(f"candidate {fmt.number(time_ms)} ms")
        if base_ms is not None:
            parts.append(f"PyTorch eager {fmt.number(base_ms)} ms")
        lines.append("- timing (median): " + ", ".join(parts))
    if speedup is not None:
        lines.append(f"- speedup over PyTorch eager: {fmt.number(speedup)}x")
    if roofline is not None:
        lines.append(f"- roofline fraction: {fmt.number(roofline)} (1.0 is the device's speed of light for this problem)")
    for key in sorted(fb):
        value = fb[key]
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"- {key}: {_cut(text, max_chars)}")
    return "\n".join(lines)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    return f"{text[:head]}\n[... {len(text) - max_chars} characters cut ...]\n{text[-tail:]}"


def _indent_block(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


def _source(text: str) -> str:
    text = strip_metadata(text)  # held-out shapes are never shown to a model
    return text if text.endswith("\n") else text + "\n"


@dataclass
class Prompt:
    """The two messages sent to a model."""

    system: str
    user: str
    meta: dict[str, Any] = field(default_factory=dict)
    device_section: str = ""  # the rendered device text: replays on another machine match without it

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.messages(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class PromptSettings:
    """How prompts are built; ``templates`` holds a researcher's replacements by section name."""

    templates: dict[str, str] = field(default_factory=dict)
    template_files: dict[str, str] = field(default_factory=dict)  # section -> file it came from
    example: str = "other"  # other | self | none
    edit_format: str = "full"  # full | diff
    device: str | None = None
    feedback_max_chars: int = 4000

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PromptSettings:
        """Read template files named by generator options (``template_dir``, ``system_prompt``,
        ``user_template``); a missing file or an unknown section is a RecipeError."""
        templates: dict[str, str] = {}
        files: dict[str, str] = {}
        folder = options.get("template_dir")
        if folder:
            root = Path(str(folder))
            if not root.is_dir():
                raise RecipeError(f"generator.template_dir {root} is not a folder")
            for f in sorted(root.iterdir()):
                if f.suffix not in (".txt", ".md", ".tmpl") or not f.is_file():
                    continue
                section = f.stem
                if section in ("task_full", "task_diff") or section in SECTIONS:
                    templates[section] = f.read_text()
                    files[section] = str(f)
                else:
                    raise RecipeError(f"generator.template_dir: {f.name} names no prompt section; sections: "
                                      f"{', '.join(s for s in SECTIONS if s != 'task')}, task_full, task_diff")
        for option, section in (("system_prompt", "system"), ("user_template", "user")):
            path = options.get(option)
            if path:
                p = Path(str(path))
                if not p.is_file():
                    raise RecipeError(f"generator.{option} {p} does not exist")
                templates[section] = p.read_text()
                files[section] = str(p)
        given = {k: options[k] for k in ("example", "edit_format", "device", "feedback_max_chars")
                 if options.get(k) is not None}  # a generator passes its resolved options: every one is there
        settings = cls(templates=templates, template_files=files, **given)
        settings.check()
        return settings

    def template(self, section: str) -> str:
        return self.templates.get(section, DEFAULTS[section])

    def check(self) -> None:
        """Every placeholder in every replaced template exists (fail at load, not mid-run)."""
        for section, text in self.templates.items():
            allowed = set(_VALUE_KEYS) | (set(PLACEHOLDERS) if section == "user" else set())
            for name in _placeholders(text, section, self.template_files.get(section)):
                if name not in allowed:
                    where = self.template_files.get(section, f"the {section} template")
                    raise RecipeError(f"{where}: unknown placeholder ${name}; available: "
                                      f"{', '.join('$' + k for k in sorted(allowed))} ($$ for a dollar sign)")


def _placeholders(text: str, section: str, where: str | None) -> list[str]:
    found = []
    for m in string.Template.pattern.finditer(text):
        if m.group("invalid") is not None:
            line = text[: m.start()].count("\n") + 1
            raise RecipeError(f"{where or f'the {section} template'} line {line}: a lone $ (write $$ for a "
                              f"dollar sign)")
        name = m.group("named") or m.group("braced")
        if name:
            found.append(name)
    return found


def _fill(template: str, values: dict[str, str]) -> str:
    return string.Template(template).substitute(values)


_EMPTY = "\x00kforge-empty-section\x00"


def _collapse(text: str) -> str:
    """Remove empty sections with the blank lines around them (and nothing else: the sources quoted
    in the prompt keep every blank line they have)."""
    text = re.sub(r"(?:\n*" + re.escape(_EMPTY) + r"\n*)+", "\n\n", text)
    return text.replace(_EMPTY, "").strip("\n") + "\n"


def example_pair(problem: Problem, backend_name: str, mode: str,
                 candidates: list[Problem] | None = None) -> tuple[str, str, str | None]:
    """(reference source, solution source, example problem id) for the example section, or empty strings.

    ``other`` (default) shows a different problem's reference and its solution in the backend, a
    one-shot demonstration that gives nothing of this problem away; ``self`` shows this problem's own
    example solution (a starting point); ``none`` shows no example.
    """
    if mode == "none":
        return "", "", None
    if mode == "self":
        path = problem.solutions().get(backend_name)
        return ("", path.read_text(), problem.id) if path else ("", "", None)
    from kforge.problems import builtin_problems

    pool = [p for p in (candidates or builtin_problems()) if p.id != problem.id]
    # The smallest elementwise-like example first: it shows the format with the least to copy.
    pool.sort(key=lambda p: (p.id != "relu", p.level or 0, len(p.source), p.id))
    for other in pool:
        path = other.solutions().get(backend_name)
        if path is not None:
            return _source(other.source), path.read_text(), other.id
    return "", "", None


def _history_text(history: Any) -> str:
    """Refinement turns as one line each (a search passes dicts with a 'summary', or strings)."""
    if not history:
        return ""
    lines = [str(h.get("summary", h)) if isinstance(h, dict) else str(h) for h in history]
    return "\n".join(f"- {line}" for line in lines if line.strip())


def _inspirations_text(inspirations: Any, max_programs: int = 4) -> str:
    if not inspirations:
        return ""
    parts = []
    for insp in list(inspirations)[:max_programs]:
        code = insp.get("code") if isinstance(insp, dict) else None
        if not code:
            continue
        s = insp.get("speedup")
        label = f"speedup {fmt.speedup(s)}" if isinstance(s, (int, float)) else "not yet correct"
        parts.append(f"Program ({label}):\n\n```python\n{_source(code)}```")
    return "\n\n".join(parts)


def build_prompt(problem: Problem, backend: Backend, device: dict[str, Any] | None,
                 params: dict[str, Any] | None, settings: PromptSettings | None = None) -> Prompt:
    """The system and user messages for one proposal.

    ``params`` is the proposal's: ``parent_code`` (a candidate to improve), ``feedback`` (a dict
    about an earlier candidate, or text) and ``edit_format`` ('full' or 'diff') are used here.
    """
    settings = settings or PromptSettings()
    params = params or {}
    parent = params.get("parent_code")
    edit_format = str(params.get("edit_format") or settings.edit_format)
    mode = "none" if settings.example == "self" and parent else settings.example  # a parent is the start
    ex_source, ex_solution, ex_id = example_pair(problem, backend.name, mode)
    device_name, specs = _device_values(device or {}, settings.device)
    values = {
        "problem_id": problem.id, "problem_name": problem.name, "problem_source": _source(problem.source),
        "problem_dtype": problem.dtype, "backend_name": backend.name, "backend_language": backend.language,
        "backend_guidance": backend.guidance().strip(),
        "example_problem_source": _source(ex_source) if ex_source else "",
        "example_solution": _source(ex_solution) if ex_solution else "",
        "device_name": device_name, "device_specs": specs,
        "parent_code": _source(parent) if parent else "",
        "feedback_text": format_feedback(params.get("feedback"), settings.feedback_max_chars),
        "second_parent_code": _source(params["second_parent_code"]) if params.get("second_parent_code") else "",
        "history_text": _history_text(params.get("history")),
        "inspirations_text": _inspirations_text(params.get("inspirations")),
    }
    sections = {
        "problem": _fill(settings.template("problem"), values),
        "backend": _fill(settings.template("backend"), values),
        "example": "",
        "device": _fill(settings.template("device"), values),
        "parent": _fill(settings.template("parent"), values) if parent else "",
        "feedback": _fill(settings.template("feedback"), values) if values["feedback_text"] else "",
        "second_parent": _fill(settings.template("second_parent"), values) if values["second_parent_code"] else "",
        "history": _fill(settings.template("history"), values) if values["history_text"] else "",
        "inspirations": _fill(settings.template("inspirations"), values) if values["inspirations_text"] else "",
        "rules": _fill(settings.template("rules"), values),
    }
    if ex_solution:
        if ex_source:
            sections["example"] = _fill(settings.template("example"), values)
        else:  # this problem's own solution: a starting point, not a format demonstration
            sections["example"] = _fill(
                settings.templates.get("example", "A working $backend_name solution to start from:\n\n"
                                       "```python\n$example_solution```"), values)
    task = "task_diff" if parent and edit_format == "diff" else "task_full"
    sections["task"] = _fill(settings.templates.get("task", settings.template(task)), values)
    filled = {name: text if text.strip() else _EMPTY for name, text in sections.items()}
    user = _collapse(_fill(settings.template("user"), {**values, **filled}))
    system = _fill(settings.template("system"), values).strip()
    meta: dict[str, Any] = {"example": ex_id}
    if parent:
        meta["edit_format"] = edit_format
    if settings.templates:
        meta["templates"] = sorted(settings.templates)
    return Prompt(system=system, user=user, meta=meta, device_section=sections["device"])
