"""Algorithm 1 as a loop: the buffer, a short fine-tune, resume, the divergence guard, the CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import chisquare

from fewstep.checkpoint import load_checkpoint, save_checkpoint
from fewstep.cli import main
from fewstep.config import load_config
from fewstep.errors import Diverged
from fewstep.evaluation.points import w2
from fewstep.models import load_pretrained
from fewstep.rollout import Trajectory, sample
from fewstep.runs import Run
from fewstep.samplers import as_ddpm, ddpm_table
from fewstep.schedules import make_schedule
from fewstep.steps import table_to_dict
from fewstep.training.finetune import finetune
from fewstep.training.loop import lr_factor
from fewstep.training.pretrain import pretrain
from fewstep.training.sftpg import Buffer

# A Gaussian cluster (App. A) with T = 2: tiny, fast, and DDPM is far from the target.
TINY = [
    "data.name=gaussian",
    "data.n_train=2000",
    "schedule.T=2",
    "model.hidden=[32,32]",
    "pretrain.steps=300",
    "pretrain.batch_size=128",
    "pretrain.log_every=100",
    "finetune.iterations=12",
    "finetune.batch_size=64",
    "finetune.eval_every=6",
    "evaluate.train_samples=200",
    "finetune.checkpoint_every=5",
    "finetune.critic_hidden=[32,32]",
    "finetune.baseline_hidden=[32,32]",
    "evaluate.n_samples=300",
]


def new_run(path, config, kind="finetune"):
    return Run(path, config, kind).start()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    config = load_config(None, TINY)
    run = new_run(tmp_path_factory.mktemp("pre"), config, "pretrain")
    pretrain(config, run, progress=False)
    return config, load_pretrained(run.checkpoint("pretrain")), run


def tune(config, run, model, **kwargs):
    return finetune(config, run, copy.deepcopy(model), progress=False, **kwargs)


def test_buffer_holds_every_step_and_samples_uniformly():
    K, n, rounds = 4, 5, 2
    # x[k, c] = 10 * c + k identifies (chain, step) in every stored entry; chains of round r are columns r n..
    x = (10 * torch.arange(rounds * n)[None, :] + torch.arange(K + 1)[:, None]).float()[..., None]
    traj = Trajectory(x=x, mean=x[1:], std=torch.ones(K), log_prob=torch.zeros(K, rounds * n))
    buffer = Buffer(traj, rounds, n)
    assert len(buffer) == rounds * K * n
    x_in, x_out, x0, k = buffer.sample(40_000, torch.Generator().manual_seed(0))[:4]
    assert torch.equal(x_out, x_in + 1)  # consecutive states of the same chain
    assert torch.equal(x_in[:, 0] % 10, k.float())  # the step index matches the state
    chain = torch.div(x_in[:, 0], 10, rounding_mode="floor")
    assert torch.equal(x0[:, 0], chain * 10 + K)  # x_0 is the same chain's final sample
    counts = np.bincount((chain.long() * K + k).numpy(), minlength=rounds * K * n)
    assert counts.min() > 0 and chisquare(counts).pvalue > 1e-3


def test_short_finetune_lowers_the_ipm(pretrained, tmp_path):
    config, model, _ = pretrained
    # T = 2 on the sigmoid schedule barely denoises: the generator must learn a large shortcut, so
    # a larger generator learning rate than the paper's 5e-5 keeps this test short.
    # (The EMA, which averages over ~200 iterations, and the learning-rate decay are off in a run of 150.)
    config = load_config(
        None,
        [
            *TINY,
            "finetune.iterations=150",
            "finetune.eval_every=150",
            "finetune.lr_generator=3e-3",
            "finetune.ema_decay=0",
            "finetune.lr_schedule=constant",
        ],
    )
    table = ddpm_table(make_schedule("sigmoid", 2), noise_at_last_step=True)
    target = torch.randn(2000, 2, generator=torch.Generator().manual_seed(5)) * 0.01 + 0.5
    before = w2(sample(model.model, table, 2000, (2,), seed=3), target)
    tuned = tune(config, new_run(tmp_path, config), model)
    after = w2(sample(tuned.model, tuned.table, 2000, (2,), seed=3), target)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupted_finetune_resumes_to_the_same_weights(pretrained, tmp_path, ema):
    config, model, _ = pretrained
    config = load_config(None, [*TINY, f"finetune.ema_decay={ema}"])
    straight = tune(config, new_run(tmp_path / "a", config), model).model

    def interrupt(step, stats):
        if step == 7:
            raise KeyboardInterrupt

    run = new_run(tmp_path / "b", config)
    with pytest.raises(KeyboardInterrupt):
        tune(config, run, model, callback=interrupt)
    assert load_checkpoint(run.checkpoint("finetune"))[1]["step"] == 5
    resumed = tune(config, run, model, resume=True).model
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)
    a, b = (
        load_checkpoint(tmp_path / "a" / "checkpoints" / "finetune.safetensors")[0],
        load_checkpoint(run.checkpoint("finetune"))[0],
    )
    assert any(key.startswith("optim.critic.") for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [r["step"] for r in run.metrics("finetune")]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


def test_divergence_stops_and_keeps_the_last_good_checkpoint(pretrained, tmp_path):
    config, model, _ = pretrained
    config = load_config(None, [*TINY, "finetune.critic_bound=1e-9"])
    run = new_run(tmp_path, config)
    with pytest.raises(Diverged, match=r"critic.*the last good checkpoint is .*finetune.safetensors \(step 0\)"):
        tune(config, run, model)
    tensors, meta = load_checkpoint(run.checkpoint("finetune"))
    assert meta["step"] == 0
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_policy_gradient_tunes_a_table_with_noise_at_every_step(pretrained, tmp_path):
    config, model, _ = pretrained
    config = load_config(None, [*TINY, "sampler.noise_at_last_step=false", "finetune.iterations=2"])
    tuned = tune(config, new_run(tmp_path, config), model)
    assert tuned.table.scoreable and float(tuned.table.s[-1]) > 0


@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["finetune.critic_reg=gp"],
        ["finetune.estimator=pathwise", "finetune.critic_reg=gp"],
        ["finetune.estimator=pg", "finetune.critic_reg=gp"],
        ["finetune.n_generator=3", "finetune.clip=0.1"],
    ],
)
def test_every_variant_runs_and_changes_the_generator(pretrained, tmp_path, variant):
    config, model, _ = pretrained
    config = load_config(None, [*TINY, "finetune.iterations=3", *variant])
    tuned = tune(config, new_run(tmp_path, config), model).model
    changed = any(not torch.equal(p, q) for p, q in zip(model.model.state_dict().values(), tuned.state_dict().values()))
    assert changed


def test_cli_finetune_then_sample_uses_the_recorded_table(pretrained, tmp_path):
    _, _, run = pretrained
    runner = CliRunner()
    args = [
        "finetune",
        "--checkpoint",
        str(run.checkpoint("pretrain")),
        "--run-dir",
        str(tmp_path / "ft"),
        "--quiet",
        "--set",
        "finetune.iterations=4",
        "--set",
        "finetune.eval_every=2",
        "--set",
        "evaluate.n_samples=200",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "2-step ddpm sampler" in result.output and "noise floor" in result.output
    assert (tmp_path / "ft" / "summary.md").is_file() and (tmp_path / "ft" / "figures" / "samples.png").is_file()
    checkpoint = tmp_path / "ft" / "checkpoints" / "finetune.safetensors"
    meta = load_pretrained(checkpoint).meta
    assert meta["table"]["s"][-1] > 0 and meta["stage"] == "finetune"
    out = tmp_path / "x.npy"
    result = runner.invoke(main, ["sample", "--checkpoint", str(checkpoint), "-n", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (50, 2)
    # an unknown preset or a bad finetune key is a one-line error
    bad = runner.invoke(main, ["finetune", "--checkpoint", str(run.checkpoint("pretrain")), "--set", "finetune.lam=-1"])
    assert bad.exit_code == 2 and "finetune.lam" in bad.output


def test_as_ddpm_keeps_levels_and_times_and_matches_ddpm_on_a_subsequence():
    schedule = make_schedule("linear", 100)
    tau = [0, 9, 30, 61, 99]
    reference = ddpm_table(schedule, tau, "beta", noise_at_last_step=True)
    deterministic = ddpm_table(schedule, tau, "beta_tilde", noise_at_last_step=False)
    assert not deterministic.is_fully_stochastic
    converted = as_ddpm(deterministic)
    assert converted.is_fully_stochastic
    for col in ("t", "a", "b", "s", "alpha_bar"):
        assert torch.allclose(getattr(converted, col), getattr(reference, col), rtol=1e-12, atol=0), col


def test_cli_finetune_starts_from_a_recorded_deterministic_schedule(pretrained, tmp_path):
    """An optimised (deterministic) schedule recorded in a checkpoint initialises SFT-PG as DDPM on its levels."""
    _, _, run = pretrained
    tensors, meta = load_checkpoint(run.checkpoint("pretrain"))
    recorded = ddpm_table(make_schedule("sigmoid", 2), [0, 1], "beta_tilde")  # last step deterministic
    meta["table"] = table_to_dict(recorded)
    source = tmp_path / "scheduled.safetensors"
    save_checkpoint(source, tensors, meta)
    result = CliRunner().invoke(
        main,
        [
            "finetune",
            "--checkpoint",
            str(source),
            "--run-dir",
            str(tmp_path / "ft"),
            "--quiet",
            "--set",
            "finetune.iterations=2",
            "--set",
            "evaluate.n_samples=100",
        ],
    )
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(tmp_path / "ft" / "checkpoints" / "finetune.safetensors")[1]["table"]
    assert tuned["t"] == recorded.t.tolist() and all(s > 0 for s in tuned["s"])


def test_generator_learning_rate_schedules(pretrained, tmp_path):
    assert [lr_factor("linear", s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor("cosine", 0, 10) == 1.0 and abs(lr_factor("cosine", 5, 10) - 0.5) < 1e-12
    assert lr_factor("constant", 7, 10) == 1.0
    config, model, _ = pretrained
    config = load_config(
        None, [*TINY, "finetune.iterations=4", "finetune.lr_schedule=linear", "finetune.lr_generator=1e-3"]
    )
    run = new_run(tmp_path, config)
    tune(config, run, model)
    groups = load_checkpoint(run.checkpoint("finetune"))[1]["optim"]["generator"]["param_groups"]
    assert abs(groups[0]["lr"] - 1e-3 * 0.25) < 1e-12  # the last iteration (step 3 of 4) ran at 1/4
