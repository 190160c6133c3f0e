"""LLM operators: diff mutation, full rewrite and crossover, through an OpenAI-compatible server.

With an ensemble of endpoints serving several models, `llm_operators` makes one operator per
(mode, model): `llm_diff@qwen-7b`, `llm_diff@gpu2:8000`, ... Each is an arm of the operator
bandit, so the search learns which model earns its tokens for which kind of edit, and the arm's
name is the operator recorded with every call and every child in the store (which is how a
resumed run replays the bandit). With one model the names stay `llm_diff`, `llm_rewrite`,
`llm_crossover`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from evo.errors import OperatorError
from evo.llm.client import LLMClient, LLMRequestError, PreferredModel, model_groups
from evo.llm.edits import apply_reply
from evo.llm.engine import ChatLLM
from evo.llm.prompts import build_messages
from evo.llm.reasoning import answer_or_error, replies_of, token_usage
from evo.operators.base import Operator, Proposal, ProposalRequest
from evo.program import Program

MODES = ("diff", "rewrite", "crossover")


class LLMOperator:
    """Asks a model for `n` children of the parent(s); replies that do not apply are dropped with a reason.

    `model` is the label of the model this operator asks first (a bandit arm); it suffixes the
    operator's name: `llm_diff@MODEL`.
    """

    def __init__(self, client: ChatLLM, mode: str = "diff", n: int = 1, max_tokens: int = 2048,
                 temperature: float = 0.8, model: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be 'diff', 'rewrite' or 'crossover', not {mode!r}")
        self.client = client
        self.mode = mode
        self.model = model
        self.name = f"llm_{mode}" + (f"@{model}" if model else "")
        self.arity = 2 if mode == "crossover" else 1
        self.calls_model = True  # the engine keeps a proposal stream free of model calls
        self.n = n
        self.max_tokens = max_tokens
        self.temperature = temperature

    def applicable(self, parents: Sequence[Program]) -> bool:
        """A crossover needs two different parents; a diff or a rewrite takes any parent."""
        return self.arity == 1 or parents[0].text != parents[1].text

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        parents = request.parents[: self.arity]
        if len(parents) < self.arity:
            raise OperatorError(f"{self.name} needs {self.arity} parents, got {len(parents)}")
        messages = build_messages(self.mode, request.task_prompt, parents, request.inspirations, request.feedback,
                                  lessons=request.lessons, foreign=request.foreign)
        # Every related task's elite shown is an inspiration of each child: the store credits transfer by it.
        transfer = [{"task": str(p.meta.get("task", "")), "program": p.id, "role": "inspiration"}
                    for p in request.foreign]
        try:
            completion = await self.client.chat(messages, n=self.n, max_tokens=self.max_tokens,
                                                temperature=self.temperature, rng=request.rng)
        except LLMRequestError as e:
            # This request refused (a prompt over the model's context, as a long parent makes): this call's
            # failure, recorded like any; the run goes on, and max_consecutive_rejections stops one that only fails.
            raise OperatorError(f"{self.name}: {e}") from None
        # Thinking apart from the answer: the answer is parsed, and the tokens of each are recorded.
        replies = replies_of(completion)
        usage = token_usage(completion, [r for r, _ in replies])
        apply_mode = "diff" if self.mode == "diff" else "rewrite"
        proposals, errors = [], []
        for reply, truncated in replies:
            try:
                child, meta = apply_reply(parents[0].text, answer_or_error(reply, truncated), apply_mode,
                                          thinking=False)
            except OperatorError as e:
                errors.append(str(e))
                continue
            proposals.append(Proposal(source=child, parents=tuple(p.id for p in parents), operator=self.name,
                                      meta={**meta, "llm": usage, **({"transfer": transfer} if transfer else {})}))
        if not completion.texts:
            raise OperatorError(f"{self.name}: the server's reply held no choices", meta={"llm": usage})
        if not proposals:
            raise OperatorError(f"{self.name}: no usable reply ({len(errors)} of {len(completion.texts)} failed: "
                                f"{'; '.join(errors[:2])})", meta={"llm": usage})
        return proposals


def llm_operators(
    client: ChatLLM, weights: Mapping[str, float], *, n: int = 1, max_tokens: int = 2048, temperature: float = 0.8
) -> tuple[dict[str, Callable[[], Operator]], dict[str, float]]:
    """Registry entries and weights of the LLM operators: one per (mode, model) arm.

    `weights` is the run's `{operator: weight}` table. Each `llm_<mode>` in it becomes, when
    `client` is an `LLMClient` whose endpoints serve more than one model (`model_groups`), one
    operator per model, `llm_<mode>@<model>`, weighted by the operator's weight times the
    model's share of the endpoint weights; with one model it stays one operator, `llm_<mode>`.
    Other names pass through unchanged. Returns (factories to add to the registry, new weights).
    """
    groups = model_groups(client.endpoints) if isinstance(client, LLMClient) else {}
    total = sum(e.weight for e in client.endpoints) if groups else 0.0
    registry: dict[str, Callable[[], Operator]] = {}
    out: dict[str, float] = {}
    options = {"n": n, "max_tokens": max_tokens, "temperature": temperature}
    for name, weight in weights.items():
        mode = name.removeprefix("llm_") if name.startswith("llm_") else None
        if mode not in MODES:
            out[name] = weight
            continue
        if len(groups) <= 1:
            registry[name] = functools.partial(LLMOperator, client, mode, **options)
            out[name] = weight
            continue
        assert isinstance(client, LLMClient)
        for label, indices in groups.items():
            share = sum(client.endpoints[i].weight for i in indices) / total
            view = PreferredModel(client, label, indices)
            arm = f"{name}@{label}"
            registry[arm] = functools.partial(LLMOperator, view, mode, model=label, **options)
            out[arm] = weight * share
    return registry, out
