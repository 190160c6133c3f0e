import torch
import torch.nn as nn


class Model(nn.Module):
    """The cosine similarity of each row of `a` with the same row of `b`: their dot product over the product of
    their norms (at least eps)."""

    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dot = (a * b).sum(dim=1)
        norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
        return dot / norms.clamp_min(eps)


eps = 1e-8
rows = 8192
features = 2048


def get_inputs():
    return [torch.randn(rows, features), torch.randn(rows, features)]


def get_init_inputs():
    return []
