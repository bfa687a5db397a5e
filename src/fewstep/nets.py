"""Networks for vector data (paper App. F.1).

* ``TimeMLP``: the epsilon-model ``eps(x, t)`` (4 linear layers, 128 units, softplus) and, with
  one output, the time-conditioned baseline ``V_omega(x_{t+1}, t)`` (3 layers, ReLU).
* ``MLP``: the critic ``f_alpha(x_0)`` (3 layers, 128 units, ReLU).

Time enters through sinusoidal features of the (integer or continuous) model time, projected and
added to every hidden layer, so the same network serves any step table.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style features [cos(t w_i), sin(t w_i)] of a float time tensor [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class MLP(nn.Module):
    """x [B, *shape] -> [B, out_dim]: linear layers of widths ``hidden`` with an activation."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128, 128), out_dim: int = 1, activation: str = "relu"):
        super().__init__()
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class TimeMLP(nn.Module):
    """(x [B, *shape], t [B]) -> [B, out_dim] or, with ``out_dim=None``, the shape of ``x``."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (128, 128, 128),
        out_dim: int | None = None,
        activation: str = "softplus",
        time_dim: int = 32,
    ):
        super().__init__()
        widths = [in_dim, *hidden]
        self.time_dim = time_dim
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.time_proj = nn.ModuleList(nn.Linear(time_dim, b) for b in hidden)
        self.act = ACTIVATIONS[activation]()
        self.reshape_output = out_dim is None
        self.out = nn.Linear(widths[-1], in_dim if out_dim is None else out_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.time_dim).to(x.dtype)
        h = x.flatten(1)
        for layer, proj in zip(self.layers, self.time_proj):
            h = self.act(layer(h) + proj(emb))
        out = self.out(h)
        return out.view_as(x) if self.reshape_output else out
