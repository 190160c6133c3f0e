"""Replies of reasoning models: the answer apart from the thinking, and the tokens each took.

A reasoning model thinks aloud before it answers, and its thoughts often hold drafts of the very
edit blocks or programs that the answer holds. Parsed whole, a reply applies the drafts first,
the real edit then no longer finds its SEARCH text, and the reply is lost. So every place that
parses a reply (edits, rewrites, crossover, lessons) first takes the answer with `answer_of`.

The thinking comes in three shapes:

- inline sections, ``<think>...</think>`` or ``<thinking>...</thinking>``, opened at the start
  of a line (so that a tag inside a string of a program mid-line is left alone), anywhere
  before or between parts of the answer;
- a closing tag with no opening one: chat templates (DeepSeek-R1, Qwen3) put ``<think>`` in
  the prompt, so the reply starts inside its thoughts and only ``</think>`` shows;
- a separate field of the chat completion message (vLLM's ``--reasoning-parser``:
  ``reasoning_content``, or ``reasoning`` in newer versions), read by `LLMClient`.

A thought cut off by the token limit leaves no answer at all: `answer_of` says so and names the
option to raise, rather than parsing the thought as if it were the answer.

Tokens: servers count the thinking in `completion_tokens` (the GPU spent them alike), and vLLM
reports the thinking's part as `completion_tokens_details.reasoning_tokens` where it can. Where
no server said, the part is estimated from the thinking's share of the characters. The operator
bandit charges all generated tokens (`completion_tokens`), so a model that thinks at length pays
for it; the split is kept beside it in every call's `llm` record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evo.errors import OperatorError

__all__ = ["CUT_OFF", "Reply", "answer_of", "answer_or_error", "replies_of", "split_reasoning", "token_usage"]

CUT_OFF = "the reply was cut off while thinking; raise llm_max_tokens"
_NO_ANSWER = "the reply ended inside its thinking without an answer (a <think> section that never closed)"

# Tags as reasoning models write them; case-insensitive. Linear-time patterns (no nested repeats).
_OPEN = re.compile(r"<(think|thinking)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking)>", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    """One sample split: `answer` to parse, `reasoning` (all the thinking, joined) and whether the
    reply ended inside its thinking (`open`: an unclosed tag, or nothing but a reasoning field)."""

    answer: str
    reasoning: str
    open: bool


def _at_line_start(text: str, pos: int) -> bool:
    """Whether only spaces or tabs stand between the last newline (or the start) and `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    return not text[start:pos].strip(" \t")


class _Fences:
    """Whether a position of the answer is inside a ``` fence: a tag there is part of the code.
    Counts fence lines incrementally, so a reply is scanned once however many tags it holds."""

    def __init__(self, text: str) -> None:
        self.text, self.counted_to, self.inside = text, 0, False

    def skip(self, start: int, end: int) -> None:
        """Leave text[start:end] (thinking) out of the count."""
        self.counted_to = max(self.counted_to, end)

    def at(self, pos: int) -> bool:
        n = sum(1 for _ in _FENCE.finditer(self.text, self.counted_to, pos)) if pos > self.counted_to else 0
        self.counted_to = max(self.counted_to, pos)
        self.inside ^= n % 2 == 1
        return self.inside


def split_reasoning(text: str, reasoning: str = "") -> Reply:
    """Split a reply's `text` into answer and thinking; `reasoning` is a separate field's thinking.

    Recognises the shapes of the module docstring. An answer that is empty while there was
    thinking, or a ``<think>`` that never closes, gives `open=True`.
    """
    thoughts = [reasoning] if reasoning.strip() else []
    answer: list[str] = []
    pos = 0
    fences = _Fences(text)
    first_open, first_close = _OPEN.search(text), _CLOSE.search(text)
    if first_close is not None and (first_open is None or first_close.start() < first_open.start()):
        # The template opened the thinking: the reply starts inside it.
        thoughts.append(text[: first_close.start()])
        pos = first_close.end()
        fences.skip(0, pos)
    unclosed = False
    while True:
        match = _OPEN.search(text, pos)
        while match is not None and not (_at_line_start(text, match.start()) and not fences.at(match.start())):
            match = _OPEN.search(text, match.end())
        if match is None:
            answer.append(text[pos:])
            break
        answer.append(text[pos : match.start()])
        close = _CLOSE.search(text, match.end())
        if close is None:
            thoughts.append(text[match.end() :])
            unclosed = True
            break
        thoughts.append(text[match.end() : close.start()])
        pos = close.end()
        fences.skip(match.start(), pos)
    joined = "".join(answer).strip("\n")
    thinking = "\n".join(t.strip("\n") for t in thoughts)
    return Reply(joined + "\n" if joined and text.endswith("\n") else joined, thinking,
                 unclosed or (not joined.strip() and bool(thinking.strip())))


def answer_of(text: str, reasoning: str = "", truncated: bool | None = None) -> str:
    """The answer part of a reply, ready to parse; `OperatorError` when there is none.

    `truncated` is whether the server stopped at the token limit (`finish_reason == "length"`);
    None when unknown (a thought that never closed is then taken as cut off, the usual cause).
    """
    return answer_or_error(split_reasoning(text, reasoning), truncated)


def token_usage(completion: Any, replies: Sequence[Reply] | None = None) -> dict[str, Any]:
    """The `llm` record of a call: model, endpoint, seconds and the token counts, thinking apart.

    `completion_tokens` is every generated token (the thinking included: what the bandit
    charges); `reasoning_tokens` the thinking's part, as the server reported it or, where it did
    not, estimated from the thinking's share of the characters (`reasoning_estimated: true`);
    `answer_tokens` the rest. `completion` is an `evo.llm.client.Completion`.
    """
    if replies is None:
        replies = [split_reasoning(t, r) for t, r in zip(completion.texts, _reasonings(completion), strict=True)]
    total = int(completion.completion_tokens)
    record: dict[str, Any] = {"model": completion.model, "endpoint": completion.endpoint,
                              "prompt_tokens": int(completion.prompt_tokens), "completion_tokens": total}
    reported = getattr(completion, "reasoning_tokens", None)
    chars_thinking = sum(len(r.reasoning) for r in replies)
    # A server without a reasoning parser may report 0 while the thinking sits inline in the text.
    if reported is not None and (reported > 0 or not chars_thinking):
        thinking = min(int(reported), total)
    else:
        chars_all = chars_thinking + sum(len(r.answer) for r in replies)
        thinking = round(total * chars_thinking / chars_all) if chars_all else 0
        if chars_thinking:
            record["reasoning_estimated"] = True
    record["reasoning_tokens"] = thinking
    record["answer_tokens"] = total - thinking
    record["seconds"] = round(float(completion.seconds), 3)
    return record


def _reasonings(completion: Any) -> list[str]:
    """The separate reasoning field of each sample ("" where none), as long as `texts`."""
    given = list(getattr(completion, "reasoning", None) or [])
    return (given + [""] * len(completion.texts))[: len(completion.texts)]


def replies_of(completion: Any) -> list[tuple[Reply, bool | None]]:
    """Each sample of `completion` split, with whether the server cut it at the token limit."""
    truncated = list(getattr(completion, "truncated", None) or [])
    flags: list[bool | None] = [truncated[i] if i < len(truncated) else None for i in range(len(completion.texts))]
    return [(split_reasoning(t, r), f) for t, r, f in zip(completion.texts, _reasonings(completion), flags,
                                                             strict=True)]


def answer_or_error(reply: Reply, truncated: bool | None) -> str:
    """`answer_of` for a reply already split: the answer, or `OperatorError` when there is none."""
    if reply.open:
        raise OperatorError(_NO_ANSWER if truncated is False else CUT_OFF)
    return reply.answer
