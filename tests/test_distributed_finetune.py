"""Data-parallel shortcut fine-tuning: 2 CPU processes (gloo) with m/2 trajectories each take
exactly the steps of 1 process with m (rollout noise, data, GP points and buffer draws are drawn
for the whole batch by every process; see ``fewstep.training.sftpg.iteration``)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fewstep.checkpoint import load_checkpoint

BASE = [
    "data.name=gaussian",
    "data.n_train=200",
    "schedule.T=3",
    "model.hidden=[16,16]",
    "finetune.batch_size=8",
    "finetune.iterations=3",
    "finetune.eval_every=3",
    "evaluate.train_samples=50",
    "finetune.checkpoint_every=3",
    "finetune.critic_hidden=[16,16]",
    "finetune.baseline_hidden=[16,16]",
    "finetune.n_generator=2",
    "finetune.lr_generator=1e-3",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world_size: int, port: int, run_dir: str, overrides: list[str]) -> None:
    import torch.distributed as dist

    from fewstep.config import load_config
    from fewstep.models import Pretrained, build_eps_model
    from fewstep.runs import Run
    from fewstep.schedules import make_schedule
    from fewstep.training.finetune import finetune

    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
        )
    config = load_config(None, [*BASE, *overrides])
    torch.manual_seed(0)
    model = Pretrained(build_eps_model(config.model, (2,)), config, (2,), make_schedule("sigmoid", 3), None, "test")
    try:
        finetune(config, Run(os.path.join(run_dir, f"rank{rank}"), config, "finetune").start(), model, progress=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
            os.environ.pop(key, None)


@pytest.mark.parametrize(
    "variant", [[], ["finetune.critic_reg=gp"], ["finetune.estimator=pathwise", "finetune.critic_reg=gp"]]
)
def test_two_processes_match_one_process(tmp_path, variant):
    _run(0, 1, 0, str(tmp_path / "single"), variant)
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path / "double"), variant), nprocs=2, join=True)
    one = load_checkpoint(tmp_path / "single" / "rank0" / "checkpoints" / "finetune.safetensors")
    two = load_checkpoint(tmp_path / "double" / "rank0" / "checkpoints" / "finetune.safetensors")
    assert one[1]["step"] == two[1]["step"] == 3
    assert not (tmp_path / "double" / "rank1" / "checkpoints" / "finetune.safetensors").exists()  # only rank 0 writes
    for key in one[0]:
        if key.startswith(("model.", "train.critic.", "train.baseline.")):
            assert torch.allclose(one[0][key], two[0][key], atol=1e-5, rtol=1e-4), key
    # and the run moved the weights at all (the comparison is not between two untouched models)
    from fewstep.config import load_config
    from fewstep.models import build_eps_model

    torch.manual_seed(0)
    initial = build_eps_model(load_config(None, BASE).model, (2,)).state_dict()
    assert any(not torch.allclose(initial[k], one[0][f"model.{k}"]) for k in initial)
