"""Fine-tuning scores the sampler it rolled out: with dropout, rollouts and re-scoring must see one network.

The generator runs in eval mode during fine-tuning (as the reference implementation does): with
``model.dropout = 0.1`` in train mode, a rollout and the re-scoring of its steps draw different
dropout masks, and their log-densities differ by nats, so the policy gradient would not be that
of the sampler being tuned.
"""

import pytest
import torch

import fewstep.training.sftpg as sftpg
from fewstep.config import load_config
from fewstep.data import DataSource
from fewstep.images.unet import UNet
from fewstep.models import load_pretrained
from fewstep.pretrained import Pretrained
from fewstep.rollout import rollout, step_log_prob
from fewstep.samplers import ddpm_table
from fewstep.schedules import make_schedule
from fewstep.training.finetune import finetune

T = 10


def dropout_unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(1, 8, channels=8, channel_mult=(1, 2), dropout=0.1, norm_groups=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def dropout_config(finetune: list[str]):
    """A tiny U-Net run on the digits with dropout 0.1, and the given fine-tuning settings."""
    base = ["data.name=digits", "model.kind=unet", "model.channels=8", "model.norm_groups=4", "model.dropout=0.1"]
    return load_config(None, [*base, "schedule.kind=linear", f"schedule.T={T}", *finetune])


def rescoring_gap(model, table, noise) -> float:
    """max over steps and chains of |log p at rollout - log p re-scored|, in nats."""
    with torch.no_grad():
        traj = rollout(model, table, noise)
        return max(
            float((step_log_prob(model, table, traj.x[k], traj.x[k + 1], k) - traj.log_prob[k]).abs().max())
            for k in range(table.K)
        )


def test_dropout_makes_train_mode_rescoring_disagree():
    """Why: in train mode the same step scores differently on the way out and on re-scoring."""
    net, table = dropout_unet(), ddpm_table(make_schedule("linear", T), None, "beta", True)
    noise = torch.randn(T + 1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert rescoring_gap(net.train(), table, noise) > 0.5
    assert rescoring_gap(net.eval(), table, noise) < 1e-3


def test_finetuning_rollouts_are_rescored_by_the_same_network(monkeypatch, tmp_path):
    """In the real loop: every rollout's log-densities equal their re-scoring, and every call of the
    generator is in eval mode (fails on a loop that puts the generator in train mode)."""
    config = dropout_config(
        [
            "finetune.iterations=2",
            "finetune.batch_size=8",
            "finetune.n_critic=2",
            "finetune.n_generator=2",
            "finetune.critic_channels=[4, 8, 16]",
            "finetune.baseline_hidden=[16]",
            "finetune.eval_every=100",
            "finetune.checkpoint_every=100",
            "evaluate.train_samples=16",
        ],
    )
    data = DataSource(config.data)
    net = dropout_unet()
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in net.modules())
    pretrained = Pretrained(net.train(), config, data.shape, make_schedule("linear", T), None, "test")
    modes, gaps = [], []
    net.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    real_rollout = sftpg.rollout

    def checked_rollout(model, table, noise, **options):
        traj = real_rollout(model, table, noise, **options)
        with torch.no_grad():
            for k in range(table.K):
                rescored = step_log_prob(model, table, traj.x[k], traj.x[k + 1], k)
                # the rollout's own log-density when it kept one, else a second re-scoring of the same step
                recorded = (
                    traj.log_prob[k]
                    if traj.log_prob is not None
                    else step_log_prob(model, table, traj.x[k], traj.x[k + 1], k)
                )
                gaps.append(float((rescored - recorded).abs().max()))
        return traj

    monkeypatch.setattr(sftpg, "rollout", checked_rollout)
    result = finetune(config, None, pretrained, progress=False, data=data)
    assert gaps and max(gaps) < 1e-3, max(gaps)
    assert modes and not any(modes), f"{sum(modes)} of {len(modes)} generator calls were in train mode"
    assert result.model is net or not result.model.training


@pytest.mark.parametrize("stage", ["finetune"])
def test_the_checkpoint_keeps_dropout_for_later_training(tmp_path, stage):
    """Eval mode is how the loop runs the network; the model itself keeps its dropout setting."""
    from fewstep.runs import Run

    config = dropout_config(
        [
            "finetune.iterations=1",
            "finetune.batch_size=4",
            "finetune.n_critic=1",
            "finetune.critic_channels=[4, 8, 16]",
            "finetune.baseline_hidden=[16]",
            "evaluate.train_samples=8",
            "evaluate.n_samples=8",
        ],
    )
    data = DataSource(config.data)
    pretrained = Pretrained(dropout_unet(), config, data.shape, make_schedule("linear", T), None, "test")
    run = Run(tmp_path / "run", config, stage).start()
    finetune(config, run, pretrained, progress=False, data=data)
    loaded = load_pretrained(run.checkpoint(stage))
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in loaded.model.modules())
