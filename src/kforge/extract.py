"""Getting a candidate's code out of a model's answer.

A model answers in prose around one or more fenced blocks, or with bare code, or with
SEARCH/REPLACE edit blocks against a parent candidate, and is sometimes cut off mid-block. Every
case ends in an :class:`Extraction`: the code (or ``None``) and, when something went wrong, an error
written to be shown to the model as feedback. An edit that does not apply is never dropped: it
fails the extraction and names the block.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Reasoning models served locally (vLLM, SGLang, Ollama) often put their thinking in the content.
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)
_FENCE = re.compile(r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_MODELNEW = re.compile(r"^[ \t]*class[ \t]+ModelNew\b", re.M)
_CODE_START = re.compile(r"^(import |from \S+ import |@|class |def |async def |#!|[A-Za-z_][\w.]*[ \t]*=)")
_SEARCH = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*$")
_DIVIDER = re.compile(r"^[ \t]*={5,9}[ \t]*$")
_REPLACE = re.compile(r"^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$")
CODE_LANGUAGES = {"", "python", "py", "python3", "py3"}


@dataclass
class Block:
    """A fenced block of an answer."""

    language: str
    text: str
    closed: bool


@dataclass
class EditBlock:
    search: str
    replace: str


@dataclass
class Extraction:
    code: str | None
    kind: str  # fenced | unfenced | edit | truncated | none
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    edits_applied: int = 0
    edit_failures: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, object]:
        out: dict[str, object] = {"extraction": self.kind}
        if self.notes:
            out["extraction_notes"] = list(self.notes)
        if self.edits_applied or self.edit_failures:
            out["edits_applied"] = self.edits_applied
        if self.edit_failures:
            out["edit_failures"] = list(self.edit_failures)
        return out


def strip_thinking(text: str) -> str:
    return _THINK.sub("", text)


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block (``` or ~~~, any length, with an info string); an unclosed last fence
    gives a block with ``closed=False`` holding the rest of the answer."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        body: list[str] = []
        j = i + 1
        closed = False
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if close and close.group("fence")[0] == fence[0] and len(close.group("fence")) >= len(fence) \
                    and not close.group("info").strip():
                closed = True
                break
            body.append(lines[j])
            j += 1
        language = info.split()[0].lower() if info else ""
        blocks.append(Block(language, "\n".join(body).strip("\n") + "\n", closed))
        i = j + 1
    return blocks


def defines_modelnew(code: str) -> bool:
    return bool(_MODELNEW.search(code))


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def parse_edit_blocks(text: str) -> list[EditBlock]:
    """SEARCH/REPLACE blocks (``<<<<<<< SEARCH`` / ``=======`` / ``>>>>>>> REPLACE``), in order,
    wherever they are (inside fences or not). A block missing its REPLACE marker is kept with what
    followed its divider, so a truncated edit is reported rather than lost."""
    lines = text.split("\n")
    out: list[EditBlock] = []
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        search: list[str] = []
        replace: list[str] = []
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            search.append(lines[j])
            j += 1
        j += 1
        while j < len(lines) and not _REPLACE.match(lines[j]) and not _SEARCH.match(lines[j]):
            replace.append(lines[j])
            j += 1
        out.append(EditBlock("\n".join(search), "\n".join(replace)))
        i = j + 1 if j < len(lines) and _REPLACE.match(lines[j]) else j
    return out


def has_edit_blocks(text: str) -> bool:
    return any(_SEARCH.match(line) for line in text.split("\n"))


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _same(line: str) -> str:
    return line


def _trim_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _find_lines(hay: list[str], needle: list[str], key: Callable[[str], str]) -> list[int]:
    norm_needle = [key(x) for x in needle]
    norm_hay = [key(x) for x in hay]
    n = len(needle)
    return [k for k in range(len(hay) - n + 1) if norm_hay[k:k + n] == norm_needle]


def apply_edit(code: str, edit: EditBlock) -> tuple[str | None, str]:
    """Apply one edit: an exact match first, then ignoring trailing spaces, then ignoring a uniform
    change of indentation (the replacement is re-indented to match). Returns (new code or None, how)."""
    if not edit.search.strip():
        return None, "its SEARCH section is empty"
    hay = code.split("\n")
    needle = _trim_blank(edit.search.split("\n"))
    rep = _trim_blank(edit.replace.split("\n")) if edit.replace.strip() else []
    # Whole lines only: a SEARCH line never matches part of a line ("BLOCK = 6" is not "BLOCK = 64").
    for key, how in ((_same, "exact"), (str.rstrip, "ignoring trailing spaces")):
        hits = _find_lines(hay, needle, key)
        if hits:
            k = hits[0]
            if len(hits) > 1:
                how = f"{how}, first of {len(hits)} matches"
            return "\n".join(hay[:k] + rep + hay[k + len(needle):]), how
    hits = _find_lines(hay, needle, str.strip)
    for k in hits:
        # Only a uniform shift of indentation counts: one prefix added to (or cut from) every line.
        window = [line.rstrip() for line in hay[k:k + len(needle)]]
        lines = [line.rstrip() for line in needle]
        h0, n0 = _indent(window[0]), _indent(lines[0])
        if h0.startswith(n0):
            add = h0[len(n0):]
            if all(h == add + n for h, n in zip(window, lines) if n.strip()):
                shifted = [add + r if r.strip() else r for r in rep]
                return "\n".join(hay[:k] + shifted + hay[k + len(needle):]), "re-indented"
        elif n0.startswith(h0):
            cut = n0[len(h0):]
            if all(n == cut + h for h, n in zip(window, lines) if n.strip()):
                shifted = [r[len(cut):] if r.startswith(cut) else r.lstrip() for r in rep]
                return "\n".join(hay[:k] + shifted + hay[k + len(needle):]), "re-indented"
    return None, "its SEARCH text was not found in the parent candidate"


def apply_edits(code: str, edits: list[EditBlock]) -> tuple[str | None, list[str], list[str]]:
    """Apply edits in order (each to the result of the ones before). All or nothing: any edit that
    does not apply fails the whole answer. Returns (code or None, failures, notes)."""
    failures: list[str] = []
    notes: list[str] = []
    current = code
    for n, edit in enumerate(edits, 1):
        new, how = apply_edit(current, edit)
        if new is None:
            first = next((line.strip() for line in edit.search.split("\n") if line.strip()), "")
            failures.append(f"edit {n} of {len(edits)} did not apply: {how} (SEARCH begins {first[:80]!r})")
            continue
        if how != "exact":
            notes.append(f"edit {n} applied {how}")
        current = new
    return (None if failures else current), failures, notes


def _unfenced(text: str) -> str | None:
    """Bare code in an answer without fences: from the first line that starts code to the last line
    that keeps the module parseable (trailing prose is dropped)."""
    lines = text.split("\n")
    start = next((k for k, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return None
    body = lines[start:]
    for end in range(len(body), 0, -1):
        candidate = "\n".join(body[:end]).rstrip() + "\n"
        if not defines_modelnew(candidate):
            break
        if parses(candidate):
            return candidate
    return "\n".join(body).rstrip() + "\n"


def extract_code(text: str, parent_code: str | None = None, truncated: bool = False) -> Extraction:
    """The candidate in a model's answer. ``truncated``: the server said the answer hit its token limit."""
    answer = strip_thinking(text or "")
    if has_edit_blocks(answer):
        edits = parse_edit_blocks(answer)
        if parent_code is None:
            return Extraction(None, "edit", error="the answer holds SEARCH/REPLACE edit blocks but there is no "
                              "parent candidate to apply them to; answer with the complete module instead")
        code, failures, notes = apply_edits(parent_code, edits)
        if failures:
            hint = (" Copy the SEARCH lines exactly from the current candidate, or answer with the "
                    "complete module.")
            return Extraction(None, "edit", error="; ".join(failures) + "." + hint, notes=notes,
                              edits_applied=len(edits) - len(failures), edit_failures=failures)
        return Extraction(code, "edit", notes=notes, edits_applied=len(edits))
    blocks = fenced_blocks(answer)
    code_blocks = [b for b in blocks if b.language in CODE_LANGUAGES or defines_modelnew(b.text)]
    with_model = [b for b in code_blocks if defines_modelnew(b.text)]
    if with_model:
        complete = [b for b in with_model if b.closed and parses(b.text)]
        closed = [b for b in with_model if b.closed]
        notes = []
        if len(with_model) > 1:
            notes.append(f"{len(with_model)} blocks define ModelNew; took the last complete one")
        if complete:
            return Extraction(complete[-1].text, "fenced", notes=notes)
        if closed:
            notes.append("the block does not parse as Python; the judge will report where")
            return Extraction(closed[-1].text, "fenced", notes=notes)
        last = with_model[-1]
        if parses(last.text) and not truncated:  # the model stopped without closing the fence
            return Extraction(last.text, "fenced", notes=[*notes, "the code block was not closed"])
        return Extraction(None, "truncated", error=_truncated_message(truncated), notes=notes)
    if blocks and not blocks[-1].closed and blocks[-1].language in CODE_LANGUAGES:
        return Extraction(None, "truncated", error=_truncated_message(truncated))
    if code_blocks:
        return Extraction(None, "none", error=f"the answer holds {len(code_blocks)} code block(s) but none "
                          "defines class ModelNew; answer with one complete module that defines ModelNew")
    if not blocks and defines_modelnew(answer):
        code = _unfenced(answer)
        if code is not None:
            return Extraction(code, "unfenced", notes=["no code fence: took the bare code"])
    why = " (the answer hit the token limit)" if truncated else ""
    return Extraction(None, "none", error=f"the answer contains no code{why}: no fenced block and no "
                      "class ModelNew; answer with the complete module in one ```python block")


def _truncated_message(truncated: bool) -> str:
    why = "it hit the token limit (raise max_tokens)" if truncated else "the block was never closed"
    return f"the answer was cut off inside its code block: {why}"
