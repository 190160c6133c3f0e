"""A vanilla GPT (learned positions, pre-norm blocks, GELU MLP) trained with AdamW for a fixed wall-clock budget.

The harness calls two functions (see docs/training.md):

    build_model(info) -> nn.Module     # info.vocab_size, info.seq_len, info.device: the architecture only
    train(data, budget) -> nn.Module   # the trained model; its state_dict must fit build_model(info)

`data.batch(B, T)` gives random training windows (inputs, next-token targets), `data.vocab_size`,
`data.seq_len` (the context the model is scored at); `budget.remaining()` the seconds left, on the harness's
deadline (start-up and compilation count), `budget.device` where to train. The harness scores the returned
model itself: validation bits per byte from its logits `model(idx[B, T]) -> logits[B, T, V]`, in eval mode.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# -- the recipe (on a GPU; a CPU runs the smoke size below) -------------------------------------------------
N_LAYER = 8  # evo: int(2, 16)
N_HEAD = 8  # evo: [4, 8, 16]
N_EMBD = 512  # evo: [256, 384, 512, 768]
BATCH_SIZE = 32  # evo: [8, 16, 32, 64]
LR = 6e-4  # evo: float(1e-4, 3e-3)
WEIGHT_DECAY = 0.1  # evo: float(0.0, 0.3)
WARMUP_FRAC = 0.05  # evo: float(0.0, 0.2)
MIN_LR_FRAC = 0.1  # evo: float(0.0, 0.5)
BETA2 = 0.95  # evo: float(0.9, 0.999)
DROPOUT = 0.0  # evo: float(0.0, 0.2)
CPU_SIZE = dict(n_layer=2, n_head=4, n_embd=128, batch_size=16)  # the smoke configuration


def size(device):
    if str(device).startswith("cuda"):
        return dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, batch_size=BATCH_SIZE)
    return CPU_SIZE


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(DROPOUT))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=DROPOUT if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(seq_len, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_model(info):
    s = size(info.device)
    return GPT(info.vocab_size, info.seq_len, s["n_layer"], s["n_head"], s["n_embd"])


def train(data, budget):
    device = budget.device
    model = build_model(data).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, BETA2))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    total = max(budget.remaining() - 1.0, 1.0)  # a second kept for handing the model back
    batch = size(device)["batch_size"]
    model.train()
    while budget.remaining() > 1.0:
        frac = 1.0 - (budget.remaining() - 1.0) / total  # the schedule runs on time, not on steps
        lr = LR * (frac / WARMUP_FRAC if frac < WARMUP_FRAC else
                   MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * (frac - WARMUP_FRAC) / (1 - WARMUP_FRAC))))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = data.batch(batch)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model
