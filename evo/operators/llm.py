"""LLM operators: diff mutation, full rewrite and crossover, through an OpenAI-compatible server."""

from __future__ import annotations

from evo.errors import OperatorError
from evo.llm.edits import apply_reply
from evo.llm.engine import ChatLLM
from evo.llm.prompts import build_messages
from evo.operators.base import Proposal, ProposalRequest


class LLMOperator:
    """Asks a model for `n` children of the parent(s); replies that do not apply are dropped with a reason."""

    def __init__(self, client: ChatLLM, mode: str = "diff", n: int = 1, max_tokens: int = 2048,
                 temperature: float = 0.8):
        if mode not in ("diff", "rewrite", "crossover"):
            raise ValueError(f"mode must be 'diff', 'rewrite' or 'crossover', not {mode!r}")
        self.client = client
        self.mode = mode
        self.name = f"llm_{mode}"
        self.arity = 2 if mode == "crossover" else 1
        self.n = n
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        parents = request.parents[: self.arity]
        if len(parents) < self.arity:
            raise OperatorError(f"{self.name} needs {self.arity} parents, got {len(parents)}")
        messages = build_messages(self.mode, request.task_prompt, parents, request.inspirations, request.feedback)
        completion = await self.client.chat(messages, n=self.n, max_tokens=self.max_tokens,
                                            temperature=self.temperature, rng=request.rng)
        usage = {"model": completion.model, "endpoint": completion.endpoint,
                 "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                 "seconds": round(completion.seconds, 3)}
        apply_mode = "diff" if self.mode == "diff" else "rewrite"
        proposals, errors = [], []
        for text in completion.texts:
            try:
                child, meta = apply_reply(parents[0].text, text, apply_mode)
            except OperatorError as e:
                errors.append(str(e))
                continue
            proposals.append(Proposal(source=child, parents=tuple(p.id for p in parents), operator=self.name,
                                      meta={**meta, "llm": usage}))
        if not proposals:
            raise OperatorError(f"{self.name}: no usable reply ({len(errors)} of {len(completion.texts)} failed: "
                                f"{'; '.join(errors[:2])})", meta={"llm": usage})
        return proposals
