"""GPU readiness: every stage follows config.device, bf16 autocast of the network is optional.

On a machine with CUDA the last test runs pretraining, fine-tuning, sampling and FID on the GPU
and compares the samples with the CPU's; elsewhere it is skipped (the rest runs on the CPU).
"""

import pytest
import torch

import fewstep
from fewstep.config import load_config
from fewstep.errors import FewstepError
from fewstep.images.unet import UNet
from fewstep.models import Autocast, network
from fewstep.rollout import rollout, sample, step_log_prob
from fewstep.samplers import ddpm_table
from fewstep.schedules import make_schedule

TINY = [
    "data.name=digits",
    "model.kind=unet",
    "model.channels=8",
    "model.norm_groups=4",
    "schedule.kind=linear",
    "schedule.T=10",
    "pretrain.steps=2",
    "pretrain.batch_size=8",
    "finetune.iterations=1",
    "finetune.batch_size=8",
    "finetune.n_critic=1",
    "finetune.critic_channels=[4, 8, 16]",
    "finetune.baseline_hidden=[16]",
    "evaluate.n_samples=32",
    "evaluate.train_samples=16",
]


def test_autocast_setting_is_checked():
    assert load_config(None, ["autocast=bf16"]).autocast == "bf16"
    with pytest.raises(FewstepError, match="autocast"):
        load_config(None, ["autocast=fp16"])


def test_bf16_autocast_wraps_only_the_network():
    torch.manual_seed(0)
    net = UNet(1, 8, 8, (1, 2), norm_groups=4).eval()
    assert network(net, "off") is net
    wrapped = network(net, "bf16", "cpu")
    assert isinstance(wrapped, Autocast) and list(wrapped.parameters()) == list(net.parameters())
    table = ddpm_table(make_schedule("linear", 10), None, "beta", True)
    full = sample(net, table, 16, (1, 8, 8), seed=1)
    half = sample(wrapped, table, 16, (1, 8, 8), seed=1)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert 0 < float((full - half).abs().max()) < 0.5  # bf16 network, float32 chain: close, not equal
    # rollout and re-scoring agree under autocast too (the same network, the same rounding)
    noise = torch.randn(11, 4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        traj = rollout(wrapped, table, noise)
        for k in range(table.K):
            rescored = step_log_prob(wrapped, table, traj.x[k], traj.x[k + 1], k)
            torch.testing.assert_close(rescored, traj.log_prob[k], rtol=1e-5, atol=1e-3)


def test_pretrain_and_finetune_with_autocast(tmp_path):
    config = load_config(None, [*TINY, "autocast=bf16"])
    model, run = fewstep.pretrain(config, run_dir=tmp_path / "pre", progress=False)
    tuned, _ = fewstep.finetune(model, config, run_dir=tmp_path / "ft", progress=False)
    x = fewstep.sample(tuned, 8, seed=0)
    assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_end_to_end(tmp_path):
    """Pretraining, fine-tuning, sampling and FID on the GPU; samples match the CPU's for the same weights."""
    config = load_config(None, [*TINY, "device=cuda"])
    model, _ = fewstep.pretrain(config, run_dir=tmp_path / "pre", progress=False)
    tuned, run = fewstep.finetune(model, config, run_dir=tmp_path / "ft", progress=False)
    assert "fid" in (run.path / "metrics.jsonl").read_text()
    on_gpu = fewstep.sample(tuned, 16, seed=3, device="cuda")
    on_cpu = fewstep.sample(tuned, 16, seed=3, device="cpu")
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    result = fewstep.evaluate(tuned, config=config)
    assert result["model"]["fid"] > result["floor"]["fid"] >= 0
    bf16 = load_config(None, [*TINY, "device=cuda", "autocast=bf16"])
    tuned.config = bf16
    assert torch.isfinite(fewstep.sample(tuned, 16, seed=3)).all()
