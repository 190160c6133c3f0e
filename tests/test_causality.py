"""The causality probe on tiny real language models: causal ones pass, every kind of look-ahead fails."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evo.audit import DYNAMIC_CHECKS
from evo.audit.causality import CHECK, causality_probe

VOCAB, T, D = 50, 24, 32


class TinyLM(nn.Module):
    """One attention block; `leak` picks how (if at all) a position sees later tokens."""

    def __init__(self, leak: str = "none"):
        super().__init__()
        torch.manual_seed(0)
        self.leak = leak
        self.embed = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.1)
        self.qkv = nn.Linear(D, 3 * D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        self.head = nn.Linear(D, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        if self.leak == "sequence_norm":  # normalising over the time axis mixes every position
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        n = tokens.shape[1]
        if self.leak == "no_mask":
            mask = torch.ones(n, n, dtype=torch.bool)
        elif self.leak == "off_by_one":  # the diagonal shifted up: position t sees t + 1
            mask = torch.ones(n, n, dtype=torch.bool).tril(diagonal=1)
        else:
            mask = torch.ones(n, n, dtype=torch.bool).tril()
        x = x + nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.mlp(x)
        return self.head(x)


def test_a_causal_model_passes() -> None:
    model = TinyLM().eval()
    assert causality_probe(model, VOCAB, T) is None


@pytest.mark.parametrize("leak", ["no_mask", "off_by_one", "sequence_norm"])
def test_a_model_that_sees_later_tokens_fails(leak: str) -> None:
    reason = causality_probe(TinyLM(leak).eval(), VOCAB, T)
    assert reason is not None and "sees later tokens" in reason, reason


def test_a_leak_at_the_last_position_only_is_found() -> None:
    base = TinyLM().eval()

    def peeks_at_the_end(tokens: torch.Tensor) -> torch.Tensor:
        logits = base(tokens)
        # the second-to-last position gets a hint of the last token: a one-step look-ahead at one place
        logits[:, -2] = logits[:, -2] + 0.01 * nn.functional.one_hot(tokens[:, -1], VOCAB)
        return logits

    reason = causality_probe(peeks_at_the_end, VOCAB, T)
    assert reason is not None and f"position {T - 2}" in reason, reason


def test_logits_of_the_wrong_shape_are_a_failure_not_a_crash() -> None:
    reason = causality_probe(lambda tok: torch.zeros(tok.shape[0], VOCAB), VOCAB, T)
    assert reason is not None and "shape" in reason


def test_the_check_is_registered_for_the_training_family_only() -> None:
    check = DYNAMIC_CHECKS[CHECK]
    assert check.applies_to("training") and not check.applies_to("kernels") and not check.applies_to("math")
