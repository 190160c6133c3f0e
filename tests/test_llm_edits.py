"""Parsing and applying LLM replies (evo.llm.edits): hand-written replies, good and malformed."""

from __future__ import annotations

import time

import pytest

from evo.errors import OperatorError
from evo.llm.edits import (
    MAX_BLOCKS,
    EditBlock,
    apply_edit_blocks,
    apply_reply,
    extract_program,
    parse_edit_blocks,
)

PARENT = '''\
import math


def area(r):
    """Area of a circle."""
    return math.pi * r * r


def solve(n):
    total = 0
    for i in range(n):
        total += area(i)
    return total
'''


def block(search: str, replace: str, n: int = 7) -> str:
    return f"{'<' * n} SEARCH\n{search}{'=' * n}\n{replace}{'>' * n} REPLACE\n"


def test_single_diff() -> None:
    reply = "Use tau.\n" + block("    return math.pi * r * r\n", "    return math.tau * r * r / 2\n")
    child, meta = apply_reply(PARENT, reply, "diff")
    assert child == PARENT.replace("math.pi * r * r", "math.tau * r * r / 2")
    assert meta["mode"] == "diff" and meta["blocks"] == [{"block": 1, "match": "exact", "line": 6, "ambiguous": False}]


def test_several_blocks_apply_in_order() -> None:
    # The second block's SEARCH only exists after the first block has been applied.
    reply = block("    total = 0\n", "    total = 0.0\n") + "then\n" + block(
        "    total = 0.0\n    for i in range(n):\n", "    total = 0.0\n    for i in range(1, n):\n", n=5
    )
    child, meta = apply_reply(PARENT, reply, "diff")
    assert "total = 0.0\n    for i in range(1, n):" in child
    assert [b["match"] for b in meta["blocks"]] == ["exact", "exact"]


def test_trailing_whitespace_differs() -> None:
    reply = block("def solve(n):   \n    total = 0\t\n", "def solve(n):\n    total = 1\n")
    child, meta = apply_reply(PARENT, reply, "diff")
    assert "def solve(n):\n    total = 1\n    for i" in child
    assert meta["blocks"][0]["match"] == "trailing_ws"


def test_indent_normalised_and_replacement_reindented() -> None:
    # The model dropped the function's indentation; the replacement must get it back, nesting kept.
    reply = block(
        "for i in range(n):\n    total += area(i)\n",
        "for i in range(n):\n    if i % 2:\n        total += area(i)\n",
    )
    child, meta = apply_reply(PARENT, reply, "diff")
    assert "    for i in range(n):\n        if i % 2:\n            total += area(i)\n    return total\n" in child
    assert meta["blocks"][0]["match"] == "indent"
    # Over-indented SEARCH: the difference is removed from the replacement.
    reply = block("        return math.pi * r * r\n", "        return r * r * math.pi\n")
    child, _ = apply_reply(PARENT, reply, "diff")
    assert "\n    return r * r * math.pi\n" in child


def test_crlf_reply() -> None:
    reply = block("    total = 0\n", "    total = 10\n").replace("\n", "\r\n")
    child, _ = apply_reply(PARENT, reply, "diff")
    assert "    total = 10\n" in child and "\r" not in child


@pytest.mark.parametrize("fence", ["```diff", "```python", "```"])
def test_fenced_blocks_with_prose(fence: str) -> None:
    reply = (
        f"Here is my change:\n\n{fence}\n"
        + block("import math\n", "import math  \nimport os\n", n=9).replace("SEARCH", "SEARCH   ")
        + "```\n\nThis imports os. Hope it helps!\n"
    )
    blocks = parse_edit_blocks(reply)
    assert blocks == [EditBlock("import math\n", "import math  \nimport os\n")]
    assert apply_reply(PARENT, reply, "diff")[0].startswith("import math  \nimport os\n")


def test_ambiguous_search_edits_first_and_notes_it() -> None:
    source = "x = 1\ny = 2\nx = 1\n"
    child, report = apply_edit_blocks(source, [EditBlock("x = 1\n", "x = 3\n")])
    assert child == "x = 3\ny = 2\nx = 1\n"
    assert report[0]["ambiguous"] and "more than once" in report[0]["note"]


def test_prose_only_reply() -> None:
    with pytest.raises(OperatorError, match="no edit blocks"):
        apply_reply(PARENT, "I think the code is fine.\n=======\nNo changes needed.", "diff")


def test_missing_divider_names_block() -> None:
    reply = block("import math\n", "import os\n") + "<<<<<<< SEARCH\nimport math\n>>>>>>> REPLACE\n"
    with pytest.raises(OperatorError, match=r"edit block 2 .*missing its '======='"):
        parse_edit_blocks(reply)


def test_missing_replace_marker_names_block() -> None:
    with pytest.raises(OperatorError, match=r"edit block 1 .*'>>>>>>> REPLACE'.*end of the reply"):
        parse_edit_blocks("<<<<<<< SEARCH\nimport math\n=======\nimport os\n")
    reply = "<<<<<<< SEARCH\na\n=======\nb\n" + block("c\n", "d\n")
    with pytest.raises(OperatorError, match=r"edit block 1 .*'>>>>>>> REPLACE'.*next"):
        parse_edit_blocks(reply)


def test_empty_search_in_nonempty_program() -> None:
    with pytest.raises(OperatorError, match="block 1 of 1: the SEARCH section is empty"):
        apply_reply(PARENT, block("", "print(1)\n"), "diff")
    assert apply_reply("", block("", "print(1)\n"), "diff")[0] == "print(1)\n"


def test_search_not_found_names_block_and_quotes_line() -> None:
    reply = block("import math\n", "import os\n") + block("    return 42\n", "    return 0\n") + block("a\n", "b\n")
    with pytest.raises(OperatorError, match=r"edit block 2 of 3: SEARCH text not found in the parent; "
                       r"first line was: 'return 42'"):
        apply_reply(PARENT, reply, "diff")


def test_empty_reply() -> None:
    for mode in ("diff", "rewrite"):
        with pytest.raises(OperatorError, match="empty"):
            apply_reply(PARENT, "  \n", mode)


def test_garbage_megabyte_reply_is_fast() -> None:
    garbage = ("<<<< ==== >>>> ``` ((( " * 50 + "\n") * 900 + "x" * 100_000
    assert len(garbage) > 1_000_000
    t = time.perf_counter()
    for mode in ("diff", "rewrite"):
        with pytest.raises(OperatorError):
            apply_reply(PARENT, garbage, mode)
    assert time.perf_counter() - t < 5


def test_megabyte_of_tiny_blocks_is_capped() -> None:
    reply = block("a\n", "b\n") * 40_000
    assert len(reply) > 1_000_000
    t = time.perf_counter()
    with pytest.raises(OperatorError, match=f"more than {MAX_BLOCKS} edit blocks"):
        apply_reply(PARENT, reply, "diff")
    assert time.perf_counter() - t < 5


def test_rewrite_block_amid_prose() -> None:
    program = "def f(x):\n    return x + 1\n"
    child, meta = apply_reply(PARENT, f"Sure! Here it is:\n```python\n{program}```\nIt adds one.", "rewrite")
    assert child == program and meta == {"mode": "rewrite"}


def test_rewrite_takes_the_larger_block() -> None:
    small, large = "x = 1\n", "def f(x):\n    return x * 2\n\n\nprint(f(3))\n"
    reply = f"Old:\n```py\n{small}```\nNew:\n```\n{large}```\nUsage: ```bash\nrun\n```"
    assert extract_program(reply) == large


def test_rewrite_without_fence() -> None:
    assert apply_reply(PARENT, "import math\nprint(math.e)", "rewrite")[0] == "import math\nprint(math.e)\n"
    with pytest.raises(OperatorError, match="no code block"):
        extract_program("I would rewrite the loop to use numpy.")


def test_rewrite_broken_python_reports_line() -> None:
    reply = "```python\nimport math\n\ndef f(x)\n    return x\n```"
    with pytest.raises(OperatorError, match=r"does not parse: line 3: "):
        apply_reply(PARENT, reply, "rewrite")


def test_edit_that_changes_nothing() -> None:
    reply = block("    total = 0\n", "    total = 0\n")
    with pytest.raises(OperatorError, match="change nothing"):
        apply_reply(PARENT, reply, "diff")
    with pytest.raises(OperatorError, match="change nothing"):
        apply_reply(PARENT, f"```python\n{PARENT}```", "rewrite")


def test_orphan_replace_and_misquoted_later_line() -> None:
    with pytest.raises(OperatorError, match="has no '<<<<<<< SEARCH'"):
        parse_edit_blocks("import math\n=======\nimport os\n>>>>>>> REPLACE\n")
    # The first line exists but a later one was misquoted: the message points at where to look.
    with pytest.raises(OperatorError, match=r"first line was: 'def solve\(n\):' \(that line is at line 9"):
        apply_reply(PARENT, block("def solve(n):\n    total = None\n", "def solve(n):\n"), "diff")


def test_unfenced_prose_and_oversized_child_are_refused() -> None:
    with pytest.raises(OperatorError, match="no code block"):
        extract_program("Done")  # parses as a bare name, but is no program
    with pytest.raises(OperatorError, match="over the limit"):
        apply_reply(PARENT, "```python\n" + "x = 1\n" * 50_000 + "```", "rewrite")
