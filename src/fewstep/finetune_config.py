"""The ``finetune`` section of the config: shortcut fine-tuning's settings and its presets.

Kept apart from :mod:`fewstep.config` (which imports it and holds the other sections and the
loading) because it is the largest section; every field carries its meaning and range
(:mod:`fewstep.fields`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import opt


@dataclass
class FinetuneConfig:
    """Shortcut fine-tuning (paper Section 4, Algorithm 1); defaults are the paper's toy settings (App. F.1)."""

    estimator: str = opt(
        "pg_baseline",
        "generator gradient: pg_baseline (eq. 20), pg (eq. 15, no baseline), pathwise (SFT, eq. 14)",
        choices=("pg_baseline", "pg", "pathwise"),
    )
    critic_reg: str = opt(
        "baseline",
        "critic regulariser: baseline (R_B of eq. 23, 'SFT-PG (B)') or gp (gradient penalty, eq. 22)",
        choices=("baseline", "gp"),
    )
    iterations: int = opt(
        6_000,
        "outer iterations of Algorithm 1 (fewer steps need more: at T = 4, 6000 end 30% lower than 3000; at "
        "T = 10, 3000 suffice)",
        min=1,
        max=100_000_000,
    )
    batch_size: int = opt(
        64,
        "m: trajectories per critic round, data points per round, buffer steps per generator round",
        min=1,
        max=1_000_000,
    )
    n_critic: int = opt(5, "critic/baseline rounds per iteration (n_critic)", min=1, max=1000)
    n_generator: int = opt(1, "generator rounds per iteration (n_generator; images: 10)", min=1, max=1000)
    lam: float = opt(0.1, "lambda of eq. 23 weighting R_B in the critic objective (images: 1.0)", min=0.0)
    gp_weight: float = opt(0.001, "eta of the gradient penalty eq. 22 (paper's best: 0.001)", min=0.0)
    clip: float | None = opt(
        None, "gamma: clip the generator's gradient norm (Section 4.2); null = no clipping (images: 0.1)", above=0.0
    )
    lr_generator: float = opt(
        1e-4, "Adam learning rate of the generator theta (paper toys: 5e-5; images: 1e-6)", above=0.0, max=10.0
    )
    max_kl: float = opt(
        0.0,
        "trust region: the largest mean KL divergence (nats) one generator update may move eq. 20's steps by, "
        "measured on 64 buffer entries; a larger update is scaled back to it (0 = off, as the paper). The images "
        "preset's 2e-4 keeps a U-Net at generator lr 1e-5 or 1e-4 from diverging; on the toys 1e-3 slows T = 4",
        min=0.0,
    )
    lr_critic: float = opt(1e-3, "Adam learning rate of the critic alpha (images: 1e-4)", above=0.0, max=10.0)
    lr_baseline: float = opt(1e-3, "Adam learning rate of the baseline omega (images: 1e-4)", above=0.0, max=10.0)
    critic_hidden: list[int] = opt(
        [128, 128], "hidden widths of the MLP critic (App. F.1: 3 layers, 128 units, ReLU)", min=1, max=10_000_000
    )
    baseline_hidden: list[int] = opt(
        [128, 128],
        "hidden widths of the MLP baseline V(x_{t+1}, t) (App. F.1; images: 1024, 1024, 256)",
        min=1,
        max=10_000_000,
    )
    critic_channels: list[int] = opt(
        [64, 128, 256],
        "images: widths of the conv critic's three stride-2 layers (App. F.2: 256, 512, 1024)",
        min=1,
        max=10_000_000,
    )
    train: str = opt(
        "network",
        "what policy gradient trains: network (the epsilon-network's weights, the paper) or table (the step table's "
        "per-step a, b and s, the network frozen: no backward pass through it)",
        choices=("network", "table"),
    )
    last_step: str = opt(
        "pathwise",
        "gradient of the final step (std sigma_1): pathwise (reparameterised, grad f(mu_theta(x_1) + sigma_1 z) with "
        "the step's own noise z: no 1/sigma_1 factor on baseline errors) or pg (eq. 20, as the paper)",
        choices=("pathwise", "pg"),
    )
    pathwise_steps: int = opt(
        2,
        "with last_step=pathwise: how many final steps are reparameterised and back-propagated through together "
        "(1: the final step only; the earlier steps keep eq. 20's policy gradient)",
        min=1,
        max=100_000,
    )
    learn_variance: str = opt(
        "last",
        "trainable log-std of the sampler's steps, initialised at the table's: none (the paper), last (the "
        "reparameterised final pathwise_steps steps', trained by the pathwise gradient) or all (every step's; the "
        "others by the policy gradient)",
        choices=("none", "last", "all"),
    )
    lr_std: float = opt(1e-2, "Adam learning rate of the learned log-stds (follows lr_schedule)", above=0.0, max=10.0)
    lr_table: float = opt(1e-3, "Adam learning rate of the table's a and b when train=table", above=0.0, max=10.0)
    lr_schedule: str = opt(
        "linear",
        "generator learning-rate schedule over the iterations: constant (the paper), linear or cosine decay to 0",
        choices=("constant", "linear", "cosine"),
    )
    ema_decay: float = opt(
        0.995,
        "EMA of the generator weights used for sampling (not in the paper; 0 = off): with the decaying learning "
        "rate it removes the adversarial oscillation of the last iterate",
        min=0.0,
        max=0.999999,
    )
    critic_bound: float = opt(1e4, "divergence guard: stop when |critic value| exceeds this", above=0.0)
    log_every: int = opt(50, "iterations between metric lines", min=1)
    eval_every: int = opt(250, "iterations between evaluations on the held-out data during fine-tuning", min=1)
    divergence_retries: int = opt(
        3,
        "on a divergence (non-finite or exploding samples, critic or held-out score), go back to the last checkpoint "
        "with the generator learning rate halved, up to this many times; 0 stops at once (one process only)",
        min=0,
        max=100,
    )
    divergence_factor: float = opt(
        20.0, "divergence guard: stop when the held-out score grows past this multiple of its first value", above=1.0
    )
    checkpoint_every: int = opt(500, "iterations between checkpoints (for --resume)", min=1)


IMAGE_MAX_KL = 2e-4
"""The images preset's trust region (nats per generator update): on the 14x14 MNIST walkthrough every generator
learning rate from 2e-6 to 1e-4 survives with it, where 1e-5 and 1e-4 diverge without it
(benchmarks/image_trust_region.py). It is not the paper's: it is what keeps its setting from needing a
hand-picked rate."""

PAPER_TOY = {
    "iterations": 2000,
    "lr_generator": 5e-5,
    "lr_schedule": "constant",
    "ema_decay": 0.0,
    "last_step": "pg",
    "learn_variance": "none",
}
FINETUNE_PRESETS = {
    "toy": {},
    "paper": PAPER_TOY,
    "images": {
        **PAPER_TOY,
        "lam": 1.0,
        "n_critic": 5,
        "n_generator": 10,
        "clip": 0.1,
        "lr_generator": 1e-6,
        "lr_critic": 1e-4,
        "lr_baseline": 1e-4,
        "batch_size": 128,
        "critic_channels": [256, 512, 1024],
        "baseline_hidden": [1024, 1024, 256],
        "max_kl": IMAGE_MAX_KL,
    },
}
"""toy: fewstep's defaults (the dataclass defaults: the paper's toy settings with a reparameterised, learned last
step, a decaying generator learning rate and an EMA); paper: the paper's toy settings (Section 6.1, App. F.1)
exactly; images: the paper's image settings (App. F.2) plus fewstep's trust region on the generator."""


def preset_for(shape: tuple[int, ...]) -> str:
    """The preset a model's data kind asks for: ``images`` for [C, H, W] samples, ``toy`` for vectors."""
    return "images" if len(shape) == 3 else "toy"
