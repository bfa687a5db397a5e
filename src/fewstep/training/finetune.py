"""The shortcut fine-tuning run: set-up around Algorithm 1 (``sftpg.py``), on the one training loop.

The checkpoint ``checkpoints/finetune.safetensors`` has the fine-tuned generator as ``model.*``
(so ``fewstep sample`` uses it, with the step table recorded in its metadata) plus the critic,
the baseline, the optimisers and the random state needed to resume exactly;
``finetune_best.safetensors`` the generator at the best held-out evaluation.

The generator network runs in eval mode throughout (no dropout): rollouts and re-scoring must see
the same network, or the policy gradient is not that of the sampler being tuned (the reference
implementation does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..checkpoint import load_checkpoint
from ..config import Config
from ..data import DataSource
from ..distributed import setup
from ..errors import FewstepError
from ..models import adam, build_baseline, build_critic, network, set_threads
from ..pretrained import Pretrained
from ..runs import Run
from ..samplers import for_policy_gradient
from ..steps import StepTable, table_from_dict, table_to_dict
from .loop import Part, Result, Stage, train
from .monitor import sample_health, sample_monitor
from .policy import Policy
from .sftpg import Nets, iteration, make_method, pathwise_tail


@dataclass
class Finetuned:
    """The fine-tuned sampling network, the table it samples with, and the loop's result."""

    model: torch.nn.Module
    table: StepTable
    result: Result


def initial_table(
    config: Config, pretrained: Pretrained, data: DataSource, table: StepTable | None = None
) -> StepTable:
    """The sampler fine-tuning starts from: ``table``, else the checkpoint's recorded one (unless
    ``config.sampler`` differs from the model's own), else ``config.sampler``'s; made ready for policy
    gradient unless the estimator is pathwise."""
    if table is None:
        table = pretrained.table_for(config.sampler, data.train())
    return table if config.finetune.estimator == "pathwise" else for_policy_gradient(table)


def finetune(
    config: Config,
    run: Run | None,
    pretrained: Pretrained,
    table: StepTable | None = None,
    resume: bool = False,
    progress: bool = True,
    data: DataSource | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> Finetuned:
    """Fine-tune ``pretrained.model`` with Algorithm 1 on ``table`` (default: :func:`initial_table`).

    Logs held-out scores every ``finetune.eval_every`` iterations (``evaluate.train_samples``
    samples, the floor beside them) and keeps the best checkpoint by them. A non-finite loss, a
    critic beyond ``finetune.critic_bound``, bad samples or a held-out score past
    ``finetune.divergence_factor`` times its start send the run back to its last checkpoint with the
    generator learning rate halved (up to ``finetune.divergence_retries`` times), then stop it with a
    message naming the last good checkpoint. Under ``torchrun`` each process rolls out its share of
    every batch, gradients are averaged, and only rank 0 evaluates and writes; N processes take the
    same steps as one.
    """
    cfg = config.finetune
    ctx = setup(config.device)
    data = data or DataSource(config.data)
    train_x = data.train().to(ctx.device)
    shape = tuple(train_x.shape[1:])
    if shape != tuple(pretrained.shape):
        raise FewstepError(
            f"the model was trained on data of shape {tuple(pretrained.shape)} but the "
            f"{data.name} data has shape {shape}"
        )
    ctx.rows(cfg.batch_size)
    set_threads(config.threads, shape)
    path = run.checkpoint("finetune") if run else None
    if resume and path is not None and path.is_file():  # the run goes on from the table it started with
        table = table_from_dict(load_checkpoint(path)[1]["initial_table"], str(path))
    start_table = initial_table(config, pretrained, data, table)
    method = make_method(cfg)
    torch.manual_seed(config.seed + 1)
    net = pretrained.model.to(ctx.device).eval()
    generator = Policy(net, start_table, cfg.train, cfg.learn_variance, max(pathwise_tail(cfg), 1)).to(ctx.device)
    groups = [{"params": list(net.parameters()), "lr": cfg.lr_generator}] if cfg.train == "network" else []
    if generator.coefficient_parameters():
        groups.append({"params": generator.coefficient_parameters(), "lr": cfg.lr_table})
    if generator.std_parameters():
        groups.append({"params": generator.std_parameters(), "lr": cfg.lr_std})
    critic = build_critic(cfg, shape).to(ctx.device)
    baseline = build_baseline(cfg, shape, config.model.time_dim).to(ctx.device)
    parts = {
        "generator": Part(generator, adam(groups, cfg.lr_generator, ctx.device), cfg.lr_schedule),
        "critic": Part(critic, adam(critic.parameters(), cfg.lr_critic, ctx.device)),
        "baseline": Part(baseline, adam(baseline.parameters(), cfg.lr_baseline, ctx.device)),
    }
    nets = Nets(
        network(generator, config.autocast, ctx.device),  # rollouts and log-densities (bf16 autocast if set)
        critic,
        baseline,
        parts["generator"].optimizer,
        parts["critic"].optimizer,
        parts["baseline"].optimizer,
    )
    random = torch.Generator().manual_seed(config.seed + 2)

    def draw_real(m: int) -> torch.Tensor:
        return train_x[torch.randint(0, len(train_x), (m,), generator=random).to(ctx.device)]

    def step(i: int) -> dict:
        return iteration(nets, method, cfg, draw_real, shape, random, ctx.device, ctx)

    def export(policy: Policy) -> tuple[torch.nn.Module, dict]:
        return policy.network, {"table": table_to_dict(policy.frozen())}

    evaluate, watch = sample_monitor(config, data, pretrained.schedule, ctx.device, Policy.frozen)
    health = sample_health(Policy.frozen, shape, float(train_x.abs().max()), ctx.device, generator)
    stage = Stage(
        "finetune",
        parts,
        "generator",
        cfg.iterations,
        config,
        shape,
        random,
        ema_decay=cfg.ema_decay,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        evaluate=evaluate,
        evaluate_at_start=True,
        watch=watch,
        blowup=cfg.divergence_factor,
        retries=cfg.divergence_retries,
        health=health,
        meta={"initial_table": table_to_dict(start_table), "method": method.name, **pretrained_meta(pretrained)},
        export=export,
    )
    result = train(run, stage, step, resume, progress, ctx, callback)
    return Finetuned(result.model.network, result.model.frozen(), result)


def pretrained_meta(pretrained: Pretrained) -> dict:
    """What a checkpoint of a model that came from elsewhere must carry to be loaded again."""
    return {key: pretrained.meta[key] for key in ("diffusers",) if key in pretrained.meta}
