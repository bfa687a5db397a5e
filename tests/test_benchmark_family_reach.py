"""The family-reach benchmark trains a sampler on the minibatch W2^2 of the optimal one-to-one
assignment (benchmarks/toy_family_reach.py, ``minibatch_w2_squared``): its value must be the exact
W2^2 the evaluation reports, and its gradient that of the matched pairs' squared distances."""

import pytest
import torch

from fewstep.evaluation.points import w2

from _benchmarks import benchmark_module


@pytest.fixture(scope="module")
def reach():
    with benchmark_module("toy_family_reach") as module:
        yield module


def test_value_is_the_exact_empirical_w2_squared(reach):
    random = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=random), torch.randn(200, 2, generator=random) + 0.5
    value = reach.minibatch_w2_squared(x, y).item()
    assert value == pytest.approx(w2(x, y) ** 2, rel=1e-5)
    assert value < (x - y).pow(2).sum(1).mean().item()  # better than pairing row i with row i


def test_gradient_is_that_of_the_matched_pairs(reach):
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    y = torch.tensor([[1.1, 0.0], [0.0, 0.2]])  # optimal: x0 <-> y1, x1 <-> y0
    reach.minibatch_w2_squared(x, y).backward()
    expected = 2 * (x.detach() - y[[1, 0]]) / 2  # d/dx of the mean over the two matched pairs
    assert torch.allclose(x.grad, expected)
