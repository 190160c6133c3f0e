import torch
import torch.nn as nn


class Model(nn.Module):
    """Multiplies the input by a learned per-feature scale, adds a learned per-feature bias, and applies tanh."""

    def __init__(self, features: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(features) * 0.5 + 1.0)
        self.bias = nn.Parameter(torch.randn(features) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * self.scale + self.bias)


batch_size = 4096
features = 8192


def get_inputs():
    return [torch.randn(batch_size, features)]


def get_init_inputs():
    return [features]
