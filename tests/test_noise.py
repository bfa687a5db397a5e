"""Counter-based noise: Philox4x32-10 against the Random123 known-answer vectors, and the Gaussians it makes."""

import numpy as np
import pytest
import torch
from scipy import stats

from fewstep.noise import gaussian_noise, philox4x32

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter (4 words), key (2 words), output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    words = philox4x32([torch.tensor([c]) for c in counter], key)
    assert [int(w) for w in words] == list(expected)
    # vectorised: the same block computed among others gives the same words
    batch = philox4x32([torch.tensor([c, 7, c]) for c in counter], key)
    assert [int(w[2]) for w in batch] == list(expected)


def test_noise_is_standard_normal_and_independent():
    x = gaussian_noise(3, torch.arange(4000), 5, (25,)).double()
    flat = x.flatten().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 4 / np.sqrt(flat.size) and abs(flat.var() - 1) < 4 * np.sqrt(2 / flat.size)
    # no correlation between coordinates, samples or steps
    corr = np.corrcoef(x.numpy().T)
    assert np.abs(corr - np.eye(25)).max() < 0.08
    other_step = gaussian_noise(3, torch.arange(4000), 6, (25,)).double()
    other_seed = gaussian_noise(4, torch.arange(4000), 5, (25,)).double()
    for other in (other_step, other_seed):
        assert abs(np.corrcoef(x.flatten().numpy(), other.flatten().numpy())[0, 1]) < 0.01
    assert abs(np.corrcoef(x[:-1].flatten().numpy(), x[1:].flatten().numpy())[0, 1]) < 0.01


def test_a_sample_gets_the_same_noise_in_any_batch():
    full = gaussian_noise(11, torch.arange(100), 2, (3, 4, 4))
    for start, stop in ((0, 1), (37, 64), (99, 100)):
        part = gaussian_noise(11, torch.arange(start, stop), 2, (3, 4, 4))
        assert torch.equal(part, full[start:stop])
    assert gaussian_noise(11, torch.tensor([2**40 + 5]), 2, (3,)).shape == (1, 3)  # 64-bit sample indices
