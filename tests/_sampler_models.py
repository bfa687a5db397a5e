"""Shared eps-models for the sampler tests: the exact Gaussian predictor and a small random net."""

from __future__ import annotations

import torch

from fewstep.nets import TimeMLP
from fewstep.samplers.spacings import alpha_bar_at


class GaussianEps(torch.nn.Module):
    """The exact E[eps | x_t] for data N(mu, s^2 I): sqrt(1-ab) (x - sqrt(ab) mu) / (ab s^2 + 1 - ab).

    A module (with one unused float64 parameter) so code that asks a model for its dtype accepts it.
    """

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, torch.as_tensor(mu, dtype=torch.float64), float(s)
        self.unused = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        t = t.double().cpu()
        if not t.requires_grad and (t == t[0]).all():  # one time for the whole batch (sampling): compute it once
            t = t[:1]
        if t.requires_grad:  # differentiable in t (schedule optimisation)
            from fewstep.schedule_opt import log_alpha_bar

            ab = log_alpha_bar(self.schedule, t).exp().to(x).view(-1, *([1] * (x.ndim - 1)))
        else:
            ab = alpha_bar_at(self.schedule, t).to(x).view(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu.to(x)) / (ab * self.s**2 + 1 - ab)


def random_net(dim: int = 2, seed: int = 0) -> torch.nn.Module:
    """A float64 TimeMLP with random weights: a nonlinear eps-model taking (x, t)."""
    torch.manual_seed(seed)
    return TimeMLP(dim, hidden=[32, 32], time_dim=16).double().eval()


def diffusers_kwargs(schedule) -> dict:
    """Give diffusers our betas (it keeps them in float32, hence the ~1e-5 tolerances in the tests)."""
    return {"num_train_timesteps": schedule.T, "trained_betas": schedule.beta.numpy()}


def noise_block(K: int, n: int, shape, seed: int) -> torch.Tensor:
    """A block [K + 1, n, *shape] of standard normal noise from one seeded generator."""
    return torch.randn((K + 1, n, *shape), generator=torch.Generator().manual_seed(seed))
