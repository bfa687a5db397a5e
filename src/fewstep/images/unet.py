"""A DDPM-style U-Net epsilon-model (Ho et al. 2020, App. B; the architecture of PixelCNN++ with
a sinusoidal time embedding).

Layout, for ``channel_mult = (1, 2)`` and 8x8 inputs::

    conv_in 3x3 -> [ResBlock x num_res_blocks (+ attention) , Downsample]  8x8 -> 4x4
                -> [ResBlock x num_res_blocks (+ attention)]               4x4
    middle: ResBlock, self-attention, ResBlock
    up path mirrors the down path with num_res_blocks + 1 ResBlocks per level, each taking the
    matching skip activation concatenated on channels; GroupNorm, SiLU, conv_out 3x3.

Every ResBlock adds a projection of the time embedding (sinusoidal features of the model time,
then a 2-layer MLP, as in Ho et al.) after its first convolution. Upsampling interpolates to the
size of the skip activation, so odd sizes (28 -> 14 -> 7 -> 14 -> 28) work.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewstepError
from ..nets import sinusoidal_embedding


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or (None) about 4 channels per group, at most 32 groups
    (Ho et al.: 32 groups of 4)."""
    return nn.GroupNorm(groups or math.gcd(32, max(1, channels // 4)), channels)


def check_groups(channels: int, channel_mult: Sequence[int], groups: int | None) -> None:
    """A fixed group count must divide every width the U-Net normalises (the skip concatenations too)."""
    if groups is None:
        return
    widths = {channels * m for m in channel_mult} | {channels}
    widths |= {a + b for a in widths for b in widths}
    bad = sorted(w for w in widths if w % groups)
    if bad:
        raise FewstepError(
            f"model.norm_groups={groups} does not divide the U-Net width {bad[0]} (model.channels={channels}, "
            f"channel_mult={list(channel_mult)}); pick a divisor of model.channels"
        )


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time projection, GroupNorm-SiLU-dropout-conv, + (1x1-projected) input."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0, groups: int | None = None):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = group_norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int | None = None):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # [B, HW, C] each
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """eps(x [B, C, H, W], t [B]) -> [B, C, H, W].

    ``channels`` is the base width; level ``i`` has ``channels * channel_mult[i]`` channels and
    resolution ``H / 2**i`` (rounded up). ``attention_resolutions`` lists the resolutions (the
    height of the activation) whose ResBlocks are followed by self-attention; the middle block
    always has one. ``norm_groups`` fixes the GroupNorm group count of every layer (None: about 4
    channels per group, which varies with the width); a fixed count, ``channel_mult[0] == 1`` and a
    resolution divisible by ``2 ** (len(channel_mult) - 1)`` make the network expressible as a
    diffusers ``UNet2DModel`` (:mod:`fewstep.images.export`).
    """

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        norm_groups: int | None = None,
    ):
        super().__init__()
        check_groups(channels, channel_mult, norm_groups)
        g = norm_groups
        self.settings = {
            "in_channels": in_channels,
            "resolution": resolution,
            "channels": channels,
            "channel_mult": list(channel_mult),
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": list(attention_resolutions),
            "dropout": dropout,
            "norm_groups": norm_groups,
        }
        self.channels = channels
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, c, res = [channels], channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(c, channels * mult, emb_dim, dropout, g)])
                c = channels * mult
                if res in attention_resolutions:
                    block.append(Attention(c, g))
                self.down.append(block)
                skips.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
                res = (res + 1) // 2

        self.mid = nn.ModuleList(
            [ResBlock(c, c, emb_dim, dropout, g), Attention(c, g), ResBlock(c, c, emb_dim, dropout, g)]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(c + skips.pop(), channels * mult, emb_dim, dropout, g)])
                c = channels * mult
                if res in attention_resolutions:
                    block.append(Attention(c, g))
                self.up.append(block)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Conv2d(c, c, 3, padding=1)]))  # after a 2x upsampling
                res = res * 2
        self.norm_out = group_norm(c, g)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)

    @staticmethod
    def _is_resample(block: nn.ModuleList) -> bool:
        return isinstance(block[0], nn.Conv2d)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        emb = self.time_mlp(sinusoidal_embedding(t, self.channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if self._is_resample(block):
                h = block[0](h)
            else:
                h = block[0](h, emb)
                for attn in block[1:]:
                    h = attn(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if self._is_resample(block):
                h = block[0](F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
            else:
                h = block[0](torch.cat([h, hs.pop()], dim=1), emb)
                for attn in block[1:]:
                    h = attn(h)
        return self.conv_out(F.silu(self.norm_out(h)))
