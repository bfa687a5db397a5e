"""SFT-PG gradient estimators on a linear-Gaussian chain whose objective has a closed form.

Generator: eps(x, t_k) = w_k x + c_k, so step k is x' = (a_k + b_k w_k) x + b_k c_k + s_k z and x_0 is
Gaussian with mean and variance that are explicit functions of theta = (w, c). With the fixed critic
f(x) = u x + q x^2, E f(x_0) = u m + q (m^2 + v): autograd on that expression is the analytic gradient
that eq. 14, eq. 15 and eq. 20 (with any baseline) must all match in expectation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.config import FinetuneConfig
from _sampler_models import noise_block
from fewstep.rollout import rollout
from fewstep.steps import StepTable
from fewstep.training.policy import Policy
from fewstep.training.sftpg import Nets, tail_pathwise_sum, pathwise_objective, policy_gradient_sum

K = 3
U, Q = 0.7, 0.4


class LinearEps(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.3, -0.2, 0.5]))
        self.c = nn.Parameter(torch.tensor([0.1, 0.4, -0.3]))

    def forward(self, x, t):
        k = t.long()
        return self.w[k].view(-1, 1) * x + self.c[k].view(-1, 1)


class QuadraticCritic(nn.Module):
    def forward(self, x):
        return (U * x + Q * x**2).sum(1, keepdim=True)


class AffineBaseline(nn.Module):
    """An arbitrary (not optimal) baseline V(x, k) = 0.5 x - 0.2 k + 0.3."""

    def forward(self, x, k):
        return (0.5 * x.sum(1) - 0.2 * k + 0.3).view(-1, 1)


TABLE = StepTable(
    name="linear-test",
    t=torch.arange(K, dtype=torch.float64),
    a=torch.tensor([0.9, 1.1, 1.0], dtype=torch.float64),
    b=torch.tensor([-0.4, -0.3, -0.5], dtype=torch.float64),
    s=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    alpha_bar=torch.linspace(0.1, 0.9, K, dtype=torch.float64),
)


def closed_form_objective(model: LinearEps) -> torch.Tensor:
    """E f(x_0) for x_T ~ N(0, 1) pushed through the chain, as a differentiable function of theta."""
    mean, var = torch.tensor(0.0), torch.tensor(1.0)
    for k in range(K):
        gain = float(TABLE.a[k]) + float(TABLE.b[k]) * model.w[k]
        mean = gain * mean + float(TABLE.b[k]) * model.c[k]
        var = gain**2 * var + float(TABLE.s[k]) ** 2
    return U * mean + Q * (mean**2 + var)


def optimal_baseline(model: LinearEps):
    """V(x_{t+1}, t) = E[f(x_0) | x_{t+1}]: the conditional expectation, in closed form."""

    class Exact(nn.Module):
        def forward(self, x, k):
            mean, var = x[:, 0], torch.zeros(len(x))
            for j in range(K):
                active = k.to(x.device) <= j  # steps still ahead of x_{t+1} = x
                gain = float(TABLE.a[j]) + float(TABLE.b[j]) * model.w[j]
                mean = torch.where(active, gain * mean + float(TABLE.b[j]) * model.c[j], mean)
                var = torch.where(active, gain**2 * var + float(TABLE.s[j]) ** 2, var)
            return (U * mean + Q * (mean**2 + var)).detach().view(-1, 1)

    return Exact()


def nets_for(model, baseline=None) -> Nets:
    dummy = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    return Nets(model, QuadraticCritic(), baseline or AffineBaseline(), dummy, dummy, dummy)


def params_grad(model, loss) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([model.w.grad.clone(), model.c.grad.clone()])


def all_steps(traj):
    """Every (x_{t+1}, x_t, x_0, t) of a trajectory batch, as the buffer stores them."""
    n = traj.x.shape[1]
    return (
        traj.x[:-1].reshape(K * n, 1),
        traj.x[1:].reshape(K * n, 1),
        traj.x0.repeat(K, 1),
        torch.arange(K).repeat_interleave(n),
    )


def estimates(kind: str, batches: int = 40, n: int = 5000, baseline=None) -> torch.Tensor:
    """One gradient estimate per independent batch: [batches, 6]."""
    out = []
    for i in range(batches):
        model = LinearEps()
        nets = nets_for(model, baseline(model) if baseline else None)
        noise = noise_block(K, n, (1,), 1000 + i)
        if kind == "pathwise":
            loss = pathwise_objective(nets, TABLE, noise)
        elif kind.startswith("tail"):  # eq. 20 on steps 0..K-L-1, the final L steps reparameterised
            L = int(kind[4:])
            with torch.no_grad():
                traj = rollout(model, TABLE, noise)
            x_in, x_out, x0, k = all_steps(traj)
            earlier = k < K - L
            # every chain's tail, once per tail step it has in the buffer (L entries): weight K / L each
            tail = tail_pathwise_sum(nets, TABLE, traj.x[K - L], noise[K - L + 1 :]) * L
            loss = (
                policy_gradient_sum(nets, TABLE, (x_in[earlier], x_out[earlier], x0[earlier], k[earlier]), True) + tail
            ) / (K * n)
        else:
            with torch.no_grad():
                traj = rollout(model, TABLE, noise)
            steps = all_steps(traj)  # every step of every chain: the sum over t of eq. 20, averaged over chains
            loss = policy_gradient_sum(nets, TABLE, steps, use_baseline=(kind != "pg")) / (K * n)
        out.append(params_grad(model, loss))
    return torch.stack(out)


def analytic_gradient() -> torch.Tensor:
    model = LinearEps()
    return params_grad(model, closed_form_objective(model))


def test_closed_form_matches_monte_carlo_objective():
    model = LinearEps()
    with torch.no_grad():
        x0 = rollout(model, TABLE, noise_block(K, 400_000, (1,), 0)).x0
    mc = QuadraticCritic()(x0).mean()
    assert abs(mc - closed_form_objective(model).detach()) < 4 * QuadraticCritic()(x0).std() / 400_000**0.5


def _assert_unbiased(est: torch.Tensor, truth: torch.Tensor):
    mean, se = est.mean(0), est.std(0) / est.shape[0] ** 0.5
    assert (se < 0.2 * truth.abs().clamp(min=0.05)).all(), f"test has no power: se={se}, truth={truth}"
    assert ((mean - truth).abs() < 4.5 * se).all(), f"estimate {mean} vs analytic {truth} (se {se})"


def test_pathwise_eq14_is_unbiased():
    _assert_unbiased(estimates("pathwise", batches=20), analytic_gradient())


def test_policy_gradient_eq15_is_unbiased():
    _assert_unbiased(estimates("pg"), analytic_gradient())


def test_policy_gradient_with_arbitrary_baseline_eq20_is_unbiased():
    _assert_unbiased(estimates("pg_baseline"), analytic_gradient())


def test_policy_gradient_with_a_reparameterised_last_step_is_unbiased():
    """eq. 20 on the first K - 1 steps plus the pathwise gradient of the final step (finetune.last_step)."""
    _assert_unbiased(estimates("tail1"), analytic_gradient())


def test_policy_gradient_with_a_reparameterised_tail_of_two_steps_is_unbiased():
    """finetune.pathwise_steps = 2: eq. 20 on the first K - 2 steps, the last two back-propagated through."""
    _assert_unbiased(estimates("tail2"), analytic_gradient())


def test_learned_last_std_gets_the_analytic_gradient():
    """E f(x_0) = U m + Q (m^2 + v) with v = ... + sigma_1^2: d/d log sigma_1 = 2 Q sigma_1^2, through the policy."""
    grads = []
    for i in range(20):
        policy = Policy(LinearEps(), TABLE, learn_variance="last")
        nets = nets_for(policy)
        noise = noise_block(K, 5000, (1,), 2000 + i)
        with torch.no_grad():
            traj = rollout(policy, policy.table, noise)
        tail_pathwise_sum(nets, policy.table, traj.x[-2], noise[-1:]).div(K * 5000).backward()  # mean f(x_0)
        grads.append(policy.log_s.grad.clone())
    _assert_unbiased(torch.stack(grads), torch.tensor([2 * Q * float(TABLE.s[-1]) ** 2]))


def test_baseline_lowers_the_variance():
    plain = estimates("pg", batches=40, n=2000)
    with_baseline = estimates("pg_baseline", batches=40, n=2000, baseline=optimal_baseline)
    # total variance (trace of the covariance) of the estimator, the usual criterion
    assert with_baseline.var(0).sum() < 0.5 * plain.var(0).sum(), (with_baseline.var(0), plain.var(0))
    _assert_unbiased(with_baseline, analytic_gradient())


def test_the_paper_preset_is_the_papers_toy_settings():
    from fewstep.config import FINETUNE_PRESETS

    cfg = FinetuneConfig(**FINETUNE_PRESETS["paper"])
    assert (cfg.lam, cfg.n_critic, cfg.n_generator, cfg.clip, cfg.batch_size) == (0.1, 5, 1, None, 64)
    assert (cfg.lr_generator, cfg.lr_critic, cfg.lr_baseline, cfg.lr_schedule, cfg.ema_decay) == (
        5e-5,
        1e-3,
        1e-3,
        "constant",
        0.0,
    )
    assert (cfg.last_step, cfg.learn_variance, cfg.estimator, cfg.critic_reg) == (
        "pg",
        "none",
        "pg_baseline",
        "baseline",
    )


@pytest.mark.parametrize(
    "shape, preset, max_kl, lr_generator, n_generator",
    [((2,), "toy", 0.0, 1e-4, 1), ((1, 8, 8), "images", 2e-4, 1e-6, 10)],
)
def test_the_auto_preset_is_the_data_kinds(shape, preset, max_kl, lr_generator, n_generator):
    """An image model fine-tunes with the paper's image settings plus the trust region, a vector model with
    the toy defaults, unless the caller names a preset; --set still overrides either."""
    from fewstep.api import finetune_config
    from fewstep.config import load_config, preset_for
    from fewstep.pretrained import Pretrained
    from fewstep.schedules import make_schedule

    model = Pretrained(torch.nn.Linear(1, 1), load_config(None, []), shape, make_schedule("linear", 10), None, "x")
    assert preset_for(shape) == preset
    cfg = finetune_config(model).finetune
    assert (cfg.max_kl, cfg.lr_generator, cfg.n_generator) == (max_kl, lr_generator, n_generator)
    assert finetune_config(model, "paper").finetune.max_kl == 0.0  # a named preset wins
    assert finetune_config(model, overrides=["finetune.max_kl=0"]).finetune.max_kl == 0.0
