"""(a) Noise schedules against closed forms and against a direct Gaussian-posterior computation (float64)."""

import math

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.schedules import make_schedule, schedule_from_alpha_bar

KINDS = ("linear", "cosine", "sigmoid")


def test_linear_endpoints_and_spacing():
    for T in (10, 1000):
        beta = make_schedule("linear", T).beta
        assert beta.dtype == torch.float64 and beta.shape == (T,)
        assert beta[0].item() == pytest.approx(1e-4, rel=1e-12)
        assert beta[-1].item() == pytest.approx(0.02, rel=1e-12)
        steps = beta[1:] - beta[:-1]
        torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / (T - 1)), rtol=1e-9, atol=1e-15)


def test_cosine_alpha_bar_is_cos_squared():
    T, s = 1000, 0.008
    sched = make_schedule("cosine", T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(i + 1) / f(0) for i in range(T)], dtype=torch.float64)
    # The last beta is clipped at 0.999 (Nichol and Dhariwal), where cos^2 reaches 0.
    unclipped = sched.beta < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]
    torch.testing.assert_close(sched.alpha_bar[unclipped], expected[unclipped], rtol=1e-10, atol=1e-14)


def test_sigmoid_formula():
    T = 100
    beta = make_schedule("sigmoid", T).beta
    for i in (0, 13, 50, 99):
        x = -6 + 12 * i / (T - 1)
        assert beta[i].item() == pytest.approx(1 / (1 + math.exp(-x)) * (1e-2 - 1e-5) + 1e-5, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_derived_quantities(kind):
    sched = make_schedule(kind, 50)
    product, products = 1.0, []
    for b in sched.beta.tolist():
        product *= 1 - b
        products.append(product)
    torch.testing.assert_close(sched.alpha_bar, torch.tensor(products, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.alpha, 1 - sched.beta)
    assert sched.alpha_bar_prev[0] == 1 and torch.equal(sched.alpha_bar_prev[1:], sched.alpha_bar[:-1])
    torch.testing.assert_close(sched.snr, sched.alpha_bar / (1 - sched.alpha_bar))
    for name in ("beta", "alpha", "alpha_bar", "beta_tilde", "posterior_x0_coef", "posterior_xt_coef"):
        assert getattr(sched, name).dtype == torch.float64


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [10, 1000])
def test_posterior_matches_gaussian_conditioning(kind, T):
    """Eq. 2 against q(x_{i-1} | x_i, x_0) from the joint Gaussian of (x_{i-1}, x_i) given x_0.

    Given x_0: x_{i-1} = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev) e and x_i = sqrt(alpha) x_{i-1} +
    sqrt(beta) e', so cov = [[1 - ab_prev, sqrt(alpha)(1 - ab_prev)], [., 1 - ab]] and conditioning on
    x_i gives mean m1 + C12 / C22 (x_i - m2), variance C11 - C12^2 / C22.
    """
    sched = make_schedule(kind, T)
    ab, ab_prev, alpha = sched.alpha_bar, sched.alpha_bar_prev, sched.alpha
    c11, c12, c22 = 1 - ab_prev, alpha.sqrt() * (1 - ab_prev), 1 - ab
    gain = c12 / c22
    # mean = sqrt(ab_prev) x0 + gain (x_i - sqrt(ab) x0): coefficients of x0 and x_i
    x0_coef = ab_prev.sqrt() - gain * ab.sqrt()
    torch.testing.assert_close(sched.posterior_xt_coef, gain, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sched.posterior_x0_coef, x0_coef, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(sched.beta_tilde, c11 - c12**2 / c22, rtol=1e-7, atol=1e-12)
    assert sched.beta_tilde[0] == 0


def test_posterior_by_completing_the_square():
    """Precision and mean of q(x_t|x_{t-1}) q(x_{t-1}|x_0) as a density in x_{t-1}, at random points."""
    sched = make_schedule("sigmoid", 100)
    i = torch.arange(1, 100)
    alpha, beta, ab_prev = sched.alpha[i], sched.beta[i], sched.alpha_bar_prev[i]
    precision = alpha / beta + 1 / (1 - ab_prev)
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(99, generator=g, dtype=torch.float64), torch.randn(99, generator=g, dtype=torch.float64)
    mean = (alpha.sqrt() * xt / beta + ab_prev.sqrt() * x0 / (1 - ab_prev)) / precision
    torch.testing.assert_close(sched.beta_tilde[i], 1 / precision, rtol=1e-9, atol=0)
    torch.testing.assert_close(
        sched.posterior_x0_coef[i] * x0 + sched.posterior_xt_coef[i] * xt, mean, rtol=1e-9, atol=1e-12
    )


def test_matches_diffusers_betas():
    from diffusers import DDPMScheduler

    cases = {
        "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
        "sigmoid": dict(beta_schedule="sigmoid", beta_start=1e-5, beta_end=1e-2),
        "cosine": dict(beta_schedule="squaredcos_cap_v2"),
    }
    for kind, kwargs in cases.items():
        ref = DDPMScheduler(num_train_timesteps=1000, **kwargs)
        ours = make_schedule(kind, 1000)
        torch.testing.assert_close(ours.beta.float(), ref.betas, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(ours.alpha_bar.float(), ref.alphas_cumprod, rtol=1e-4, atol=1e-7)


def test_respacing_keeps_alpha_bar():
    sched = make_schedule("linear", 1000)
    tau = torch.arange(0, 1000, 5)
    sub = schedule_from_alpha_bar("sub", sched.alpha_bar[tau])
    torch.testing.assert_close(sub.alpha_bar, sched.alpha_bar[tau], rtol=1e-12, atol=0)


def test_bad_schedule_arguments():
    with pytest.raises(FewstepError, match="unknown noise schedule 'quadratic'"):
        make_schedule("quadratic", 10)
    with pytest.raises(FewstepError, match="T must be >= 1"):
        make_schedule("linear", 0)
