"""A stronger GPT for a fixed wall-clock budget: rotary positions, QK-norm, squared ReLU, zero-initialised
projections, an untied head with a soft logit cap, and Muon (orthogonalised momentum) for the 2-D weights of
the blocks, AdamW for the embedding, the head and the gains.

The harness calls (see docs/training.md):

    build_model(info) -> nn.Module     # info.vocab_size, info.seq_len, info.device: the architecture only
    train(data, budget) -> nn.Module   # the trained model; its state_dict must fit build_model(info)

The learning rate follows the clock: warm-up, a flat stretch, then a linear cool-down to zero at the deadline.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# -- the recipe (on a GPU; a CPU runs the smoke size below) -------------------------------------------------
N_LAYER = 8  # evo: int(2, 16)
N_HEAD = 8  # evo: [4, 8, 16]
N_EMBD = 512  # evo: [256, 384, 512, 768]
BATCH_SIZE = 32  # evo: [8, 16, 32, 64]
MUON_LR = 0.04  # evo: float(0.002, 0.08)
MUON_MOMENTUM = 0.95  # evo: float(0.8, 0.99)
ADAM_LR = 0.01  # evo: float(0.0005, 0.02)
WARMUP_FRAC = 0.02  # evo: float(0.0, 0.2)
COOLDOWN_FRAC = 0.4  # evo: float(0.1, 0.9)
SOFTCAP = 15.0  # evo: float(5.0, 50.0)
CPU_SIZE = dict(n_layer=2, n_head=4, n_embd=128, batch_size=16)  # the smoke configuration


def size(device):
    if str(device).startswith("cuda"):
        return dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, batch_size=BATCH_SIZE)
    return CPU_SIZE


def rotate(x):
    """Rotary position embedding of `x[B, H, T, D]`: each pair of channels turned by an angle that grows with T."""
    half = x.shape[-1] // 2
    freq = 1.0 / 10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = torch.arange(x.shape[2], device=x.device, dtype=torch.float32)[:, None] * freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.down = nn.Linear(4 * d, d, bias=False)
        nn.init.zeros_(self.proj.weight)  # each block starts as the identity
        nn.init.zeros_(self.down.weight)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(F.rms_norm(x, (d,))).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        q, k = rotate(F.rms_norm(q, (q.shape[-1],))), rotate(F.rms_norm(k, (k.shape[-1],)))  # QK-norm
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.relu(self.up(F.rms_norm(x, (d,)))).square())  # squared ReLU


class GPT(nn.Module):
    def __init__(self, vocab_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        nn.init.normal_(self.wte.weight, 0.0, 1.0)
        nn.init.zeros_(self.head.weight)

    def forward(self, idx):
        x = F.rms_norm(self.wte(idx), (self.wte.embedding_dim,))
        for block in self.blocks:
            x = block(x)
        logits = self.head(F.rms_norm(x, (x.shape[-1],))).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


def orthogonalise(g, steps=5):
    """An approximate U V^T of g = U S V^T by a quintic Newton-Schulz iteration (the coefficients of Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised: every direction of a matrix moves alike."""

    def __init__(self, params, lr, momentum):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = orthogonalise(p.grad.add(buf, alpha=group["momentum"]))
                p.add_(update, alpha=-group["lr"] * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)


def build_model(info):
    s = size(info.device)
    return GPT(info.vocab_size, s["n_layer"], s["n_head"], s["n_embd"])


def train(data, budget):
    device = budget.device
    model = build_model(data).to(device)
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    others = [p for p in model.parameters() if all(p is not m for m in matrices)]
    opts = [Muon(matrices, MUON_LR, MUON_MOMENTUM),
            torch.optim.AdamW(others, lr=ADAM_LR, betas=(0.8, 0.95), weight_decay=0.0)]
    for opt in opts:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    total = max(budget.remaining() - 1.0, 1.0)  # a second kept for handing the model back
    batch = size(device)["batch_size"]
    model.train()
    while budget.remaining() > 1.0:
        frac = 1.0 - (budget.remaining() - 1.0) / total  # the schedule runs on time, not on steps
        scale = min(frac / WARMUP_FRAC if WARMUP_FRAC > 0 else 1.0, 1.0, (1.0 - frac) / COOLDOWN_FRAC)
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * max(scale, 0.0)
        x, y = data.batch(batch)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
    return model
