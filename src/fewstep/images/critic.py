"""The critic and baseline networks of the paper's image experiments (App. F.2).

* ``ConvCritic`` f_alpha(x_0): three 4x4 convolutions of stride 2 (widths 256, 512, 1024 in the
  paper), LeakyReLU(0.2) after each, then a 4x4 convolution to one channel whose outputs are
  averaged over positions. On 32x32 images (CIFAR-10, the paper's case) the activation before the
  last convolution is 4x4 and the last convolution gives a single value. Smaller images (8x8
  digits, 28x28 MNIST) leave a 1x1 to 3x3 activation; there the last convolution uses 'same'
  padding so it still sees every position, and the average runs over its outputs.
* ``image_baseline`` V_omega(x_{t+1}, t): an MLP on the flattened image with a time-step embedding
  (1024, 1024, 256, then 1), i.e. ``fewstep.nets.TimeMLP`` with one output.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nets import TimeMLP

PAPER_CRITIC_WIDTHS = (256, 512, 1024)
PAPER_BASELINE_HIDDEN = (1024, 1024, 256)


class ConvCritic(nn.Module):
    """x [B, C, H, W] -> [B, 1]."""

    def __init__(self, in_channels: int, widths: Sequence[int] = PAPER_CRITIC_WIDTHS, resolution: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c, res = in_channels, resolution
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, res = w, max(1, res // 2)
        self.features = nn.Sequential(*layers)
        same = nn.ZeroPad2d((1, 2, 1, 2))  # 'same' padding of a 4x4 kernel
        self.out = nn.Conv2d(c, 1, 4) if res >= 4 else nn.Sequential(same, nn.Conv2d(c, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x)).flatten(1).mean(dim=1, keepdim=True)


def image_baseline(shape: Sequence[int], hidden: Sequence[int] = PAPER_BASELINE_HIDDEN, time_dim: int = 32) -> TimeMLP:
    """V_omega(x [B, *shape], t [B]) -> [B, 1]: ReLU MLP on the flattened image plus time features."""
    dim = 1
    for s in shape:
        dim *= int(s)
    return TimeMLP(dim, hidden=hidden, out_dim=1, activation="relu", time_dim=time_dim)
