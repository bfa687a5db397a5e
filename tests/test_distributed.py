"""Data-parallel pretraining: 2 CPU processes (gloo) computing B/2 rows each = 1 process with batch B.

``pretrain.batch_size`` is the total batch over all processes (see ``fewstep.distributed``).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fewstep.checkpoint import load_checkpoint
from fewstep.config import load_config
from fewstep.distributed import Context
from fewstep.errors import FewstepError

OVERRIDES = [
    "pretrain.steps=4",
    "pretrain.log_every=1",
    "pretrain.ema_decay=0.5",
    "model.hidden=[32, 32]",
    "data.n_train=200",
    "pretrain.lr=0.01",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, run_dir: str, batch: int) -> None:
    import torch.distributed as dist

    import fewstep.training.pretrain as pretrain_module
    from fewstep.runs import Run

    seen: list[int] = []  # rows of every forward pass of this process
    build = pretrain_module.build_eps_model

    def build_and_count(config, shape):
        model = build(config, shape)
        model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
        return model

    pretrain_module.build_eps_model = build_and_count

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    config = load_config(None, [*OVERRIDES, f"pretrain.batch_size={batch}"])
    try:
        run = Run(run_dir, config, "pretrain").start() if rank == 0 else _NoWrites(run_dir)
        pretrain_module.pretrain(config, run, progress=False)
        with open(os.path.join(run_dir, f"rows-{rank}.txt"), "w") as f:
            f.write(" ".join(map(str, seen)))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _NoWrites:
    """A run that fails the test if a rank > 0 writes anything."""

    def __init__(self, path):
        from fewstep.runs import Run

        self._path = Run.__new__(Run)
        self._path.path = __import__("pathlib").Path(path)

    def checkpoint(self, name):
        return self._path.path / "checkpoints" / f"{name}.safetensors"

    def log(self, record):
        raise AssertionError("rank > 0 logged metrics")

    def truncate_metrics(self, *a):
        raise AssertionError("rank > 0 rewrote metrics")


def test_two_processes_match_one_process_with_the_full_batch(tmp_path):
    from fewstep.runs import Run
    from fewstep.training.pretrain import pretrain

    config = load_config(None, [*OVERRIDES, "pretrain.batch_size=64"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Run(tmp_path / "single", config, "pretrain").start()
        pretrain(config, single, progress=False)
    finally:
        torch.set_num_threads(before)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "double"), 64), nprocs=2, join=True)

    one, _ = load_checkpoint(single.checkpoint("pretrain"))
    two, meta = load_checkpoint(tmp_path / "double" / "checkpoints" / "pretrain.safetensors")
    assert meta["step"] == 4
    for rank in (0, 1):  # each process ran the model on its half of every batch only
        assert (tmp_path / "double" / f"rows-{rank}.txt").read_text().split() == ["32"] * 4
    weights = [k for k in one if k.startswith(("model.", "train."))]
    assert weights
    for k in weights:
        assert torch.allclose(one[k], two[k], atol=1e-5), k
    losses_one = [r["loss"] for r in single.metrics("pretrain")]
    losses_two = [r["loss"] for r in Run.resume(tmp_path / "double", "pretrain").metrics("pretrain")]
    assert losses_two == pytest.approx(losses_one, rel=1e-5)


def test_rows_split_the_batch_evenly():
    ctx = Context(rank=1, world_size=4)
    assert ctx.rows(64) == slice(16, 32)
    assert Context().rows(64) is None
    with pytest.raises(FewstepError, match="not divisible"):
        ctx.rows(30)
