"""How far the sampler family itself reaches: the same T-step sampler trained on W2 directly, beside SFT-PG (B).

SFT-PG (B) stops above the noise floor on the toys (Table 1). This asks whether the policy gradient
and its critic are what stop it, or the sampler family: the pretrained epsilon-network with the
step table's Gaussian steps x_{k+1} = a_k x_k + b_k eps(x_k, t_k) + s_k z. The family is trained
here with the most direct signal there is for the metric the tables report: every iteration rolls
out ``--batch`` chains with gradient, assigns them one-to-one to as many training points by the
exact squared-distance assignment (Hungarian algorithm; the mean assigned cost is the empirical
W2^2 of the batch), and back-propagates that cost through every step (the pathwise gradient of
eq. 14, with the transport cost in place of a critic). No adversary, no score-function variance,
no baseline. Same EMA and linear learning-rate decay as fine-tuning. If this ends no lower than
SFT-PG (B), what is left above the floor belongs to the family, not to the estimator.

Minibatch OT is biased at finite batch sizes (Fatras et al., 2020): its minimiser is close to, not
exactly, the data distribution, so this is an estimate of the family's reach, not a bound.

    nice -n 5 python benchmarks/toy_family_reach.py --out benchmarks/results/toy_family_reach.json
"""

from __future__ import annotations

import copy
import time

import torch
from _toy_common import (
    add_seeds,
    budget,
    finetune_overrides,
    finetune_seeds,
    mean_or_none,
    per_seed,
    pooled,
    pretrained,
    print_table,
    row,
    score,
    target_parser,
    toy_config,
    write_results,
)
from scipy.optimize import linear_sum_assignment

from fewstep.config import FinetuneConfig
from fewstep.data import DataSource
from fewstep.models import EMA
from fewstep.plots import scatter
from fewstep.progress import bar
from fewstep.rollout import GeneratorNoise, rollout
from fewstep.samplers import build_table, for_policy_gradient
from fewstep.steps import StepTable
from fewstep.training.loop import lr_factor


def minibatch_w2_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The empirical W2^2 between two equal-size batches: the mean squared distance of the optimal
    one-to-one assignment (found without gradient), differentiable in ``x`` through the matched pairs."""
    with torch.no_grad():
        cost = torch.cdist(x, y).pow(2).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return (x[torch.as_tensor(rows)] - y[torch.as_tensor(cols)]).pow(2).flatten(1).sum(1).mean()


def fit_by_transport(
    network: torch.nn.Module,
    table: StepTable,
    train: torch.Tensor,
    iterations: int,
    batch: int,
    lr: float,
    finetune: FinetuneConfig,
    seed: int,
    progress: bool = False,
) -> tuple[torch.nn.Module, float, list[float]]:
    """Train a copy of ``network`` (``table`` fixed) on :func:`minibatch_w2_squared` against ``train``,
    back-propagated through the whole chain, with fine-tuning's learning-rate schedule and EMA (``finetune``);
    returns the EMA network, the seconds and the batch W2 of every iteration."""
    network = copy.deepcopy(network).train()
    ema = EMA(network, finetune.ema_decay)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: lr_factor(finetune.lr_schedule, i, iterations))
    random = torch.Generator().manual_seed(seed)
    shape, losses, started = tuple(train.shape[1:]), [], time.time()
    with bar(total=iterations, enabled=progress, desc="transport fit", unit="it") as progress_bar:
        for _ in range(iterations):
            x0 = rollout(network, table, GeneratorNoise(random, batch, shape)).x0
            loss = minibatch_w2_squared(x0, train[torch.randint(0, len(train), (batch,), generator=random)])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            ema.update(network)
            losses.append(loss.item() ** 0.5)
            progress_bar.update(1)
    return ema.model, time.time() - started, losses


def main():
    parser = target_parser(
        __doc__.split("\n\n")[0], "benchmarks/results/toy_family_reach.json", ("moons", "swiss_roll")
    )
    add_seeds(parser, default=1)
    parser.add_argument("--ot-iterations", type=int, default=3000, help="iterations of the transport fit")
    parser.add_argument("--T", type=int, default=10, help="sampling steps (a DDPM is pretrained for this T)")
    parser.add_argument("--batch", type=int, default=1024, help="chains (and data points) per transport-fit batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the transport fit")
    args = parser.parse_args()
    info = budget(args)
    if args.quick:
        args.ot_iterations, args.batch = 20, 64
    rows, panels, references = [], {}, {}
    for data in args.data:
        config = toy_config(data, args.T, args.pretrain_steps, finetune_overrides(args))
        model, _ = pretrained(config, args.progress)
        table = for_policy_gradient(build_table(config.sampler, model.schedule))
        samples, result, runs = finetune_seeds(config, model, args.seeds, args.n_samples, args.repeats, args.progress)
        seconds = mean_or_none([r["seconds"] for r in per_seed(runs)])
        rows.append(row("sft-pg-b", data, args.T, result, seconds=seconds))
        panels[data] = [(f"SFT-PG (B), W2 {100 * result['model']['w2']:.2f}e-2", samples)]
        source = DataSource(config.data)
        fits, seconds, last_batch_w2 = [], [], []
        for offset in range(args.seeds):
            network, took, batch_w2 = fit_by_transport(
                model.model, table, source.train(), args.ot_iterations, args.batch, args.lr,
                config.finetune, config.seed + offset, args.progress,
            )  # fmt: skip
            fit_samples, fit = score(network, table, config, args.n_samples, args.repeats)
            fits.append(fit)
            seconds.append(took)
            last_batch_w2.append(sum(batch_w2[-100:]) / len(batch_w2[-100:]))
            if offset == 0:
                first_samples = fit_samples
            print(f"{data}: transport fit, seed {offset}: W2 {fit['model']['w2']:.4f} in {took:.0f} s", flush=True)
        fit = pooled(fits)
        rows.append(
            row(
                "transport fit",
                data,
                args.T,
                fit,
                seconds=mean_or_none(seconds),
                batch_w2_last_100=mean_or_none(last_batch_w2),
            )
        )
        panels[data].append((f"transport fit, W2 {100 * fit['model']['w2']:.2f}e-2", first_samples))
        references[data], _ = source.floor_pair(args.n_samples, 1)
        for r in rows[-2:]:
            print(
                f"{data} {r['method']}: W2 {r['w2']:.4f} +- {r['w2_sd']:.4f} = {r['w2'] / r['floor']['w2']:.2f}x the "
                f"floor {r['floor']['w2']:.4f}; precision {r['precision']:.3f}, recall {r['recall']:.3f}",
                flush=True,
            )
    fit_budget = {"T": args.T, "ot_iterations": args.ot_iterations, "batch": args.batch, "lr": args.lr}
    write_results(args.out, rows, budget={**info, **fit_budget})
    print_table(
        rows, f"The sampler family's reach: SFT-PG (B) against a direct W2 fit of the same sampler, T = {args.T}"
    )
    png = args.out.with_suffix(".png")
    for data, panel in panels.items():
        scatter(panel, references[data], png.with_name(f"{png.stem}_{data}.png"))
    print(f"wrote {args.out} and figures beside it")


if __name__ == "__main__":
    main()
