"""Code extraction from model answers, and SEARCH/REPLACE edits against a parent candidate."""

from __future__ import annotations

from kforge.extract import EditBlock, apply_edit, apply_edits, extract_code, fenced_blocks, parse_edit_blocks

MODULE = """import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x):
        BLOCK = 1024
        return launch(x, BLOCK)
"""


def fence(code: str, lang: str = "python", ticks: str = "```") -> str:
    body = code if code.endswith("\n") else code + "\n"
    return f"{ticks}{lang}\n{body}{ticks}\n"


def test_single_fenced_block() -> None:
    ex = extract_code("Sure!\n\n" + fence(MODULE) + "\nThis is fast because ...")
    assert ex.code == MODULE and ex.kind == "fenced" and ex.error is None


def test_several_blocks_take_the_one_defining_modelnew() -> None:
    text = (fence("nvcc -O3 kernel.cu", "bash") + fence("__global__ void k() {}", "cuda") + fence(MODULE)
            + fence("model = ModelNew()\nprint(model(x))\n"))
    ex = extract_code(text)
    assert ex.code == MODULE


def test_two_modelnew_blocks_take_the_last_complete_one() -> None:
    first = MODULE.replace("1024", "256")
    ex = extract_code(fence(first) + "Wait, a better version:\n" + fence(MODULE))
    assert ex.code == MODULE and ex.notes


def test_broken_later_block_does_not_beat_a_parsing_one() -> None:
    broken = MODULE.replace("def forward(self, x):", "def forward(self, x)")
    ex = extract_code(fence(MODULE) + fence(broken))
    assert ex.code == MODULE


def test_longer_fences_tildes_and_untagged_blocks() -> None:
    inner = MODULE + '\nDOC = """\n```python\nnot the end\n```\n"""\n'
    assert extract_code(fence(inner, "python", "````")).code == inner
    assert extract_code(fence(MODULE, "", "~~~")).code == MODULE
    assert extract_code(fence(MODULE, "")).code == MODULE


def test_unfenced_answer_with_prose_around() -> None:
    text = "Here is my solution:\n\n" + MODULE + "\nThis kernel is memory bound, so BLOCK matters.\n"
    ex = extract_code(text)
    assert ex.kind == "unfenced" and ex.code == MODULE


def test_no_code_at_all() -> None:
    ex = extract_code("I cannot help with that.")
    assert ex.code is None and ex.kind == "none" and "no code" in (ex.error or "")


def test_code_blocks_without_modelnew_is_an_error_that_says_so() -> None:
    ex = extract_code(fence("def helper():\n    return 1\n"))
    assert ex.code is None and "none defines class ModelNew" in (ex.error or "")


def test_truncated_block() -> None:
    cut = "```python\n" + MODULE[:60]
    ex = extract_code("Here:\n" + cut, truncated=True)
    assert ex.code is None and ex.kind == "truncated" and "token limit" in (ex.error or "")
    ex = extract_code("Here:\n" + cut)
    assert ex.code is None and "never closed" in (ex.error or "")


def test_unclosed_but_complete_block_is_kept_when_not_truncated() -> None:
    ex = extract_code("```python\n" + MODULE)
    assert ex.code == MODULE and "not closed" in " ".join(ex.notes)


def test_thinking_is_ignored() -> None:
    draft = MODULE.replace("1024", "7")
    ex = extract_code("<think>\nmaybe:\n" + fence(draft) + "</think>\n" + fence(MODULE))
    assert ex.code == MODULE


def edit(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_search_replace_applies_to_the_parent() -> None:
    text = "Raise the block size:\n" + edit("        BLOCK = 1024", "        BLOCK = 4096")
    ex = extract_code(text, parent_code=MODULE)
    assert ex.kind == "edit" and ex.error is None and ex.code == MODULE.replace("1024", "4096")
    assert ex.edits_applied == 1


def test_several_edits_inside_a_fence_apply_in_order() -> None:
    text = "```\n" + edit("        BLOCK = 1024", "        BLOCK = 2048") + edit(
        "        return launch(x, BLOCK)", "        y = launch(x, BLOCK)\n        return y") + "```\n"
    ex = extract_code(text, parent_code=MODULE)
    assert ex.code is not None and "BLOCK = 2048" in ex.code and "return y" in ex.code and ex.edits_applied == 2


def test_edit_that_does_not_apply_is_reported_never_dropped() -> None:
    text = edit("        BLOCK = 1024", "        BLOCK = 2048") + edit("    return torch.relu(x)", "    return x")
    ex = extract_code(text, parent_code=MODULE)
    assert ex.code is None and ex.kind == "edit"
    assert "edit 2 of 2 did not apply" in (ex.error or "") and "torch.relu" in (ex.error or "")
    assert ex.edit_failures and ex.meta()["edit_failures"] == ex.edit_failures


def test_edit_without_parent_is_an_error() -> None:
    ex = extract_code(edit("a = 1", "a = 2"))
    assert ex.code is None and "no parent" in (ex.error or "")


def test_search_matches_whole_lines_only() -> None:
    code = "MY_BLOCK = 64\nBLOCK = 6\n"
    new, how = apply_edit(code, EditBlock("BLOCK = 6", "BLOCK = 8"))
    assert new == "MY_BLOCK = 64\nBLOCK = 8\n" and how == "exact"


def test_trailing_spaces_and_indentation_shift_are_tolerated() -> None:
    new, how = apply_edit(MODULE, EditBlock("        BLOCK = 1024   ", "        BLOCK = 8"))
    assert new is not None and "BLOCK = 8" in new and how == "ignoring trailing spaces"
    # the model dropped the method's indentation: the replacement is re-indented to fit
    search = "BLOCK = 1024\nreturn launch(x, BLOCK)"
    new, how = apply_edit(MODULE, EditBlock(search, "BLOCK = 4096\nreturn launch(x, BLOCK)"))
    assert how == "re-indented" and new is not None and "        BLOCK = 4096\n        return launch" in new


def test_inconsistent_indentation_does_not_match() -> None:
    search = "BLOCK = 1024\n    return launch(x, BLOCK)"  # relative indentation differs from the parent's
    new, how = apply_edit(MODULE, EditBlock(search, "x"))
    assert new is None and "not found" in how


def test_empty_search_is_a_failure() -> None:
    code, failures, _ = apply_edits(MODULE, [EditBlock("", "import os")])
    assert code is None and "empty" in failures[0]


def test_parse_edit_blocks_keeps_a_truncated_last_block() -> None:
    blocks = parse_edit_blocks(edit("a", "b") + "<<<<<<< SEARCH\nc\n=======\nd")
    assert [(b.search, b.replace) for b in blocks] == [("a", "b"), ("c", "d")]


def test_fenced_blocks_report_languages_and_closure() -> None:
    blocks = fenced_blocks("```cpp\nint x;\n```\ntext\n```python\nx = 1\n")
    assert [(b.language, b.closed) for b in blocks] == [("cpp", True), ("python", False)]
