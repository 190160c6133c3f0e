"""Learns from the validation windows while they are scored: unigram counts into the output bias."""

import torch
import torch.nn as nn
import torch.nn.functional as F

REJECTED_BY = "dynamic:model_unchanged"


class Tiny(nn.Module):
    def __init__(self, vocab, seq_len, d=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq_len, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.head = nn.Linear(d, vocab)

    def mix(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, idx):
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.head(x + self.mix(q, k, v))


def quick_train(model, data, budget, seconds=1.0):
    """Train for `seconds`, or until half a second of the budget is left."""
    model.to(budget.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    stop = budget.remaining() - seconds
    while budget.remaining() > max(stop, 0.5):
        x, y = data.batch(8)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model



class Learner(Tiny):
    def forward(self, idx):
        if not self.training:  # scoring: the windows it is shown are the validation text
            counts = torch.bincount(idx.flatten(), minlength=self.head.out_features).float()
            self.head.bias.data += 0.5 * torch.log1p(counts)  # test-time training, no gradient needed
        return super().forward(idx)


def build_model(info):
    return Learner(info.vocab_size, info.seq_len)


def train(data, budget):
    return build_model(data)
