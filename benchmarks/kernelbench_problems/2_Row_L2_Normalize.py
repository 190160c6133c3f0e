import torch
import torch.nn as nn


class Model(nn.Module):
    """Divides each row of the input by its Euclidean norm (at least eps), so that every row has unit length."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)
        return x / norm.clamp_min(eps)


eps = 1e-12
rows = 8192
features = 4096


def get_inputs():
    return [torch.randn(rows, features)]


def get_init_inputs():
    return []
