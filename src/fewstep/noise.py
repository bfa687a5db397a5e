"""Counter-based Gaussian noise: sample i's noise at step k depends only on (seed, i, k).

Sampling with per-sample seeds must give the same sample whatever the batch it is drawn in, and
must stay one batched tensor operation per step with memory O(batch x sample size). A stateful
generator per sample can do one or the other: drawing every sample's whole trajectory up front
costs O(K x batch x sample size) memory, drawing it step by step costs batch x K generator calls.
A counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") does
both: the random bits of element j of sample i at step k are a pure function

    bits = Philox4x32-10(counter = (j / 4, k, i mod 2^32, i / 2^32), key = key(seed)),

computed for the whole batch at once with ordinary integer tensor operations. The same numbers
come out on any device and at any batch size, and nothing is stored between steps.

Philox4x32-10 works on 32-bit words; torch has little uint32 arithmetic, so words live in int64.
The implementation is checked against the Random123 known-answer vectors.
Gaussians come from the Box-Muller transform of pairs of 24-bit uniforms (float32).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)


KNOWN_ANSWER = (
    (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
    (0xA4093822, 0x299F31D0),
    (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
)
"""A Random123 known-answer vector of Philox4x32-10: (counter, key, output)."""
_CHECKED: set[str] = set()


def philox4x32(counter: Sequence[torch.Tensor], key: tuple[int, int], rounds: int = 10) -> list[torch.Tensor]:
    """Philox4x32 on four int64 tensors of 32-bit words (broadcast together); returns four words.

    The 32 x 32 -> 64-bit products use int64 multiplication, whose wrap-around modulo 2^64 keeps
    the low 64 bits exact (two's complement, as torch's CPU and CUDA kernels compute it); the high
    word is then ``(product >> 32) & (2^32 - 1)``. ``_check_device`` verifies this per device type.
    The rounds run in place on preallocated buffers (half the time of fresh tensors on a CPU).
    """
    words = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) for c in counter))
    c0, c1, c2, c3 = (w.bitwise_and(MASK32) for w in words)
    product0, product1, spare = torch.empty_like(c0), torch.empty_like(c0), torch.empty_like(c0)
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        torch.mul(c0, PHILOX_M[0], out=product0)
        torch.mul(c2, PHILOX_M[1], out=product1)
        # (c0, c1, c2, c3) <- (hi(product1) ^ c1 ^ k0, lo(product1), hi(product0) ^ c3 ^ k1, lo(product0))
        torch.bitwise_right_shift(product1, 32, out=spare)
        spare.bitwise_and_(MASK32).bitwise_xor_(c1).bitwise_xor_(k0)
        c0, spare = spare, c0
        torch.bitwise_and(product1, MASK32, out=c1)
        torch.bitwise_right_shift(product0, 32, out=c2)
        c2.bitwise_and_(MASK32).bitwise_xor_(c3).bitwise_xor_(k1)
        torch.bitwise_and(product0, MASK32, out=c3)
    return [c0, c1, c2, c3]


def _check_device(device: torch.device) -> None:
    """Run the known-answer test once per device type: the noise must be the same everywhere."""
    if device.type in _CHECKED:
        return
    counter, key, expected = KNOWN_ANSWER
    words = philox4x32([torch.tensor([c], device=device) for c in counter], key)
    if [int(w) for w in words] != list(expected):
        raise RuntimeError(f"Philox4x32-10 fails its known-answer test on {device.type}: int64 products do not wrap")
    _CHECKED.add(device.type)


def seed_key(seed: int) -> tuple[int, int]:
    """The 64-bit Philox key of a run seed (hashed, so nearby seeds give unrelated streams)."""
    state = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    return int(state[0]), int(state[1])


def gaussian_noise(
    seed: int,
    indices: torch.Tensor,
    step: int,
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise [len(indices), *shape]: row r is sample ``indices[r]``'s noise at ``step``.

    A pure function of (seed, sample index, step): the same row comes out for a sample whatever
    else is in the batch. Step numbers are arbitrary non-negative integers (``sample`` uses 0 for
    x_T and k + 1 for the noise of step k).
    """
    device = torch.device(device)
    _check_device(device)
    indices = torch.as_tensor(indices, dtype=torch.int64, device=device)
    size = math.prod(shape)
    blocks = (size + 3) // 4  # four normals per Philox block
    j = torch.arange(blocks, dtype=torch.int64, device=device)[None, :]
    i = indices[:, None]
    words = philox4x32((j, torch.full_like(j, step), i & MASK32, i >> 32), seed_key(seed))
    # the top 24 bits of each word -> a float32 uniform in (0, 1] (exact; log() stays finite)
    u = [((w >> 8).to(torch.float32) + 1.0) * 2.0**-24 for w in words]
    radius_a, radius_b = (-2.0 * u[0].log()).sqrt(), (-2.0 * u[2].log()).sqrt()
    angle_a, angle_b = (2.0 * math.pi) * u[1], (2.0 * math.pi) * u[3]
    normals = torch.stack(
        [radius_a * angle_a.cos(), radius_a * angle_a.sin(), radius_b * angle_b.cos(), radius_b * angle_b.sin()], dim=2
    )
    return normals.reshape(len(indices), 4 * blocks)[:, :size].reshape(len(indices), *shape).to(dtype)
