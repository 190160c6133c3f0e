"""Replies of reasoning models: the thinking is left out of what is parsed, and its tokens are kept apart.

The reasoning formats are hand-written replies (the tiny test model never thinks): inline
``<think>`` sections with drafts of edits, a reply whose template opened the thinking, a thought
cut off by the token limit, and vLLM's separate reasoning field served by a few lines of stdlib
HTTP server, through the real client, the real operator and the real engine.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_fixtures import JsonHandler

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import OperatorError
from evo.llm.client import Endpoint, LLMClient
from evo.llm.edits import apply_reply
from evo.llm.reasoning import CUT_OFF, answer_of, split_reasoning
from evo.operators import ProposalRequest
from evo.operators.llm import LLMOperator
from evo.program import Program

PARENT = "A = 0.5\nB = 0.1\n\n\ndef solve():\n    return [A, B, 0.9, -0.2]\n"
EDIT = "<<<<<<< SEARCH\nB = 0.1\n=======\nB = 0.3\n>>>>>>> REPLACE\n"
# The draft changes the line that the real edit then searches for: applied first, it loses the reply.
DRAFT = "Let me try\n<<<<<<< SEARCH\nB = 0.1\n=======\nB = 0.2\n>>>>>>> REPLACE\nNo, 0.3 is closer.\n"
WANTED = PARENT.replace("B = 0.1", "B = 0.3")


# ----- the formats, hand-written -----


@pytest.mark.parametrize("reply", [
    f"<think>\n{DRAFT}</think>\n\n{EDIT}",
    f"<thinking>\n{DRAFT}</thinking>\n{EDIT}",
    f"<THINK>{DRAFT}</THINK>{EDIT}",
    f"{DRAFT}</think>\n\n{EDIT}",  # the chat template opened the thinking: only its end shows
    f"<think>\nfirst thought\n</think>\n{EDIT}<think>\n{DRAFT}</think>\n",  # thinking after the answer too
])
def test_edits_drafted_while_thinking_are_not_applied(reply: str) -> None:
    with pytest.raises(OperatorError):  # the bug: parsed whole, the draft applies first and the reply is lost
        apply_reply(PARENT, reply, "diff", thinking=False)
    child, meta = apply_reply(PARENT, reply, "diff")
    assert child == WANTED and meta["n_blocks"] == 1


def test_a_rewrite_takes_the_answer_program_not_the_longer_draft() -> None:
    draft = "```python\n" + PARENT + "\n# a long draft that the model then dropped\nX = [0] * 100\n```\n"
    reply = f"<think>\nA first go:\n{draft}Too long.\n</think>\n```python\n{WANTED}```\n"
    child, _ = apply_reply(PARENT, reply, "rewrite")
    assert child == WANTED


def test_a_thought_cut_off_by_the_token_limit_is_a_clear_operator_error() -> None:
    reply = f"<think>\nLet me look at the parent.\n{DRAFT}Hmm, maybe"
    with pytest.raises(OperatorError) as caught:
        apply_reply(PARENT, reply, "diff")
    assert str(caught.value) == CUT_OFF == "the reply was cut off while thinking; raise llm_max_tokens"
    # A server that says it stopped on its own: the model never closed its thinking; not the limit.
    with pytest.raises(OperatorError, match="never closed"):
        answer_of(reply, truncated=False)
    # Nothing but a separate reasoning field, cut at the limit (vLLM's parser): no answer either.
    with pytest.raises(OperatorError, match="cut off while thinking"):
        answer_of("", reasoning="I think the best", truncated=True)


def test_tags_inside_the_program_are_code_not_thinking() -> None:
    program = 'TAG = "<think>"\nDOC = """\n<think>\n"""\n\n\ndef solve():\n    return [0.3] * 4\n'
    reply = f"```python\n{program}```\n"
    split = split_reasoning(reply)
    assert split.answer == reply and split.reasoning == "" and not split.open
    child, _ = apply_reply(PARENT, reply, "rewrite")
    assert child == program


def test_a_reply_without_thinking_is_unchanged() -> None:
    split = split_reasoning(EDIT)
    assert (split.answer, split.reasoning, split.open) == (EDIT, "", False)


def test_splitting_a_huge_reply_of_tags_is_linear() -> None:
    reply = "```\n" + "<think>\n" * 100_000 + "```\n" + EDIT
    split = split_reasoning(reply)  # a quadratic scan would take minutes here
    assert split.answer == reply


# ----- vLLM's separate reasoning field, over HTTP -----


class ScriptedServer(ThreadingHTTPServer):
    """An OpenAI-compatible chat server whose choices come from `script(prompt, call)`: a dict
    with `content`, optional `reasoning_content` / `reasoning`, `finish_reason`, and `usage`."""

    daemon_threads = True

    def __init__(self, script: Callable[[str, int], dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script = script
        self.calls = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}#scripted"


class _ScriptedHandler(JsonHandler):
    server: ScriptedServer

    def do_POST(self) -> None:  # noqa: N802  # the name http.server dispatches to
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.calls += 1
            call = self.server.calls
        out = self.server.script(body["messages"][-1]["content"], call)
        message = {"role": "assistant", "content": out["content"]}
        message.update({k: out[k] for k in ("reasoning_content", "reasoning") if k in out})
        self._send(200, {"object": "chat.completion", "model": "scripted",
                         "choices": [{"index": 0, "message": message, "finish_reason": out.get("finish_reason", "stop")}],
                         "usage": out["usage"]})


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str, int], dict[str, Any]]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Callable[[str, int], dict[str, Any]]) -> ScriptedServer:
        server = ScriptedServer(script)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _propose(url: str, mode: str = "diff") -> list[Any]:
    async def go() -> list[Any]:
        async with LLMClient([Endpoint(url.split("#")[0], model="scripted")], retries=0) as client:
            op = LLMOperator(client, mode)
            request = ProposalRequest(parents=[Program(PARENT)], rng=np.random.default_rng(0))
            return await op.propose(request)

    return asyncio.run(go())


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_separate_reasoning_field_with_reported_reasoning_tokens(serve, field: str) -> None:  # type: ignore[no-untyped-def]
    usage = {"prompt_tokens": 50, "completion_tokens": 300, "completion_tokens_details": {"reasoning_tokens": 260}}
    server = serve(lambda prompt, call: {"content": EDIT, field: DRAFT * 10, "usage": usage})
    [proposal] = _propose(server.url)
    assert proposal.source == WANTED
    llm = proposal.meta["llm"]
    assert (llm["completion_tokens"], llm["reasoning_tokens"], llm["answer_tokens"]) == (300, 260, 40)
    assert "reasoning_estimated" not in llm


def test_reasoning_tokens_are_estimated_from_the_thinking_share_when_not_reported(serve) -> None:  # type: ignore[no-untyped-def]
    thinking = "x" * 3 * len(EDIT)  # three quarters of the characters
    server = serve(lambda prompt, call: {"content": f"<think>{thinking}</think>{EDIT}",
                                         "usage": {"prompt_tokens": 50, "completion_tokens": 400}})
    [proposal] = _propose(server.url)
    llm = proposal.meta["llm"]
    assert llm["reasoning_estimated"] is True
    assert llm["completion_tokens"] == 400 and abs(llm["reasoning_tokens"] - 300) <= 2
    assert llm["reasoning_tokens"] + llm["answer_tokens"] == 400


def test_a_call_cut_off_while_thinking_fails_with_its_tokens_charged(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda prompt, call: {"content": None, "reasoning_content": DRAFT, "finish_reason": "length",
                                         "usage": {"prompt_tokens": 50, "completion_tokens": 2048}})
    with pytest.raises(OperatorError) as caught:
        _propose(server.url, "rewrite")
    assert CUT_OFF in str(caught.value)
    assert caught.value.meta["llm"]["completion_tokens"] == 2048  # the bandit pays for the thinking
    assert caught.value.meta["llm"]["reasoning_tokens"] == 2048


# ----- a run: children of thinking replies, tokens of both kinds in the store and the bandit -----


def _toy_task(root: Path) -> Path:
    toy = Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic"
    folder = root / "quad"
    (folder / "seeds").mkdir(parents=True)
    shutil.copy(toy / "reference.py", folder)
    text = (toy / "task.toml").read_text()
    (folder / "task.toml").write_text(text[: text.index("# The seeds misbehave")])
    (folder / "seeds" / "seed.py").write_text(PARENT)
    return folder


def _thinking_coder(prompt: str, call: int) -> dict[str, Any]:
    """Thinks aloud with a wrong draft of the edit, then gives an edit of the parent's A line."""
    parent = re.search(r"## Parent[^\n]*\n```python\n(.*?)\n```", prompt, re.S)
    line = next(x for x in (parent.group(1) if parent else "").splitlines() if x.startswith("A = "))
    value = round(random.Random(call).uniform(-1, 1), 4)
    draft = f"<<<<<<< SEARCH\n{line}\n=======\nA = 9.0\n>>>>>>> REPLACE\n"
    content = f"<think>\nMaybe:\n{draft}That overshoots.\n</think>\n<<<<<<< SEARCH\n{line}\n=======\nA = {value}\n>>>>>>> REPLACE\n"
    return {"content": content, "usage": {"prompt_tokens": 100, "completion_tokens": 120,
                                          "completion_tokens_details": {"reasoning_tokens": 90}}}


def test_a_run_with_a_thinking_model_admits_its_children_and_charges_all_its_tokens(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(_thinking_coder)
    config = RunConfig.from_dict(dict(task=str(_toy_task(tmp_path)), budget=12, workers=1, seed=3, llm=server.url,
                                      operator_selection="bandit", operators={"llm_diff": 1.0}))
    engine = Engine.create(tmp_path / "run", config)
    assert engine.bandit is not None
    prior = engine.bandit.snapshot()["llm_diff"]["cost"]
    engine.run()
    with sqlite3.connect(tmp_path / "run" / "evo.db") as db:
        calls = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'operator_call'")]
        failed = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'operator_failed'").fetchone()[0]
        evaluated = db.execute("SELECT COUNT(*) FROM programs WHERE operator = 'llm_diff' AND status = 'evaluated'"
                               ).fetchone()[0]
    assert failed == 0 and evaluated >= 10  # every thinking reply made its child
    assert calls and all((c["llm"]["reasoning_tokens"], c["llm"]["answer_tokens"]) == (90, 30) for c in calls)
    # The bandit's cost of the arm: one per call plus every generated token (thinking included) per 1,000.
    n_calls = len(calls) + failed
    assert engine.bandit.snapshot()["llm_diff"]["cost"] == pytest.approx(prior + n_calls * (1 + 120 / 1000), abs=1e-3)
    # A resumed run's bandit replays the same cost from the store.
    reopened = Engine.open(tmp_path / "run")
    try:
        assert reopened.bandit is not None
        assert reopened.bandit.snapshot()["llm_diff"]["cost"] == pytest.approx(
            engine.bandit.snapshot()["llm_diff"]["cost"], abs=1e-3)
    finally:
        reopened.close()
