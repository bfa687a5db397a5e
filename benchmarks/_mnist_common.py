"""Shared set-up of the MNIST image benchmarks (the shape of the paper's Tables 2 and 3) at CPU budgets.

Data: the MNIST test set shipped in ``../shared/data/mnist`` (10,000 digits; set FEWSTEP_MNIST to use
another IDX directory), shuffled with a fixed seed (its first half is from other writers than its
second) and split 8,000 for training / 2,000 held out, downsampled to ``image_size``. The splits are
written as IDX files so ``fewstep pretrain`` reads the training split through ``data.name=mnist``.
FID/KID use a small classifier trained on the training split (features standardised on it); the
reference and the noise floor are the held-out images (two disjoint halves).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import struct
import time
from pathlib import Path

import numpy as np
import torch

from fewstep.config import FinetuneConfig, load_config
from fewstep.images.critic import ConvCritic, image_baseline
from fewstep.images.data import load_images, read_idx
from fewstep.images.fid import classifier_features, evaluate_images, grid_figure, reference_halves
from fewstep.metrics import score as w2_scores
from fewstep.models import load_model
from fewstep.pretrain import pretrain
from fewstep.rollout import sample
from fewstep.runs import Run

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
MNIST = Path(os.environ.get("FEWSTEP_MNIST", ROOT.parent.parent / "shared" / "data" / "mnist"))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def prepare_data(work: Path, image_size: int, n_train: int = 8000, seed: int = 0):
    """Training images/labels and held-out images, all [N, 1, S, S] in [-1, 1]."""
    data = work / "data"
    if not (data / "t10k-images-idx3-ubyte.gz").is_file():
        data.mkdir(parents=True, exist_ok=True)
        x = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
        y = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
        perm = np.random.default_rng(seed).permutation(len(x))
        train, test = perm[:n_train], perm[n_train:]
        _write_idx(data / "train-images-idx3-ubyte.gz", x[train])
        _write_idx(data / "train-labels-idx1-ubyte.gz", y[train])
        _write_idx(data / "t10k-images-idx3-ubyte.gz", x[test])
        _write_idx(data / "t10k-labels-idx1-ubyte.gz", y[test])
    train_x, train_y = load_images("mnist", str(data), image_size, split="train")
    test_x, _ = load_images("mnist", str(data), image_size, split="test")
    return train_x, train_y, test_x


def pretrained(work: Path, image_size: int, T: int, steps: int, batch: int, channels: int, schedule: str = "linear"):
    """A U-Net DDPM pretrained on the training split (cached: a finished run is loaded)."""
    overrides = [
        "data.name=mnist",
        f"data.path={work / 'data'}",
        f"data.image_size={image_size}",
        "model.kind=unet",
        f"model.channels={channels}",
        f"schedule.kind={schedule}",
        f"schedule.T={T}",
        f"pretrain.steps={steps}",
        f"pretrain.batch_size={batch}",
        "pretrain.lr=0.001",
        "pretrain.ema_decay=0.995",
        "pretrain.log_every=100",
        f"pretrain.checkpoint_every={steps}",
    ]
    config = load_config(None, overrides)
    run_dir = work / f"pretrain-{schedule}-T{T}-c{channels}-s{steps}"
    seconds = None  # a cached run reports no training time (see its run directory's metrics)
    if not (run_dir / "checkpoints" / "pretrain.safetensors").is_file():
        tick = time.perf_counter()
        pretrain(config, Run(run_dir, config), progress=True)
        seconds = time.perf_counter() - tick
    model, _, meta = load_model(run_dir / "checkpoints" / "pretrain.safetensors")
    return model, config, seconds


def features_for(work: Path, train_x, train_y):
    return classifier_features(work / "fid_classifier.safetensors", train_x, train_y, epochs=5)


def fid_monitor(table, n: int, shape, reference, features):
    """A ``sft_pg`` monitor: FID/KID of ``n`` samples (the evaluation seed) during fine-tuning."""

    def monitor(model):
        result = score(model, table, n, shape, reference, features, w2=False)[1]["model"]
        return {"fid": round(result["fid"], 4), "kid": round(result["kid"], 4)}

    return monitor


def score(model, table, n: int, shape, reference, features, seed: int = 1, w2: bool = True):
    """n samples of ``table``, their FID/KID against held-out images, and the sampling seconds."""
    tick = time.perf_counter()
    x = sample(model, table, n, shape, seed=seed, batch_size=500)
    seconds = time.perf_counter() - tick
    result = evaluate_images(x, reference, features, seed=0, kid_subsets=50, kid_subset_size=min(500, n))
    if w2:
        a, b = reference_halves(reference, n, seed=0)  # the halves evaluate_images used: W2 in pixel units too
        result["model"].update(w2_scores(x[: len(a)], a).as_dict())
        result["floor"].update(w2_scores(b, a).as_dict())
    return x, result, seconds


def make_nets(model, shape, cfg: FinetuneConfig, critic_widths, baseline_hidden, seed: int):
    from fewstep.sftpg import Nets

    torch.manual_seed(seed)
    critic = ConvCritic(shape[0], critic_widths, resolution=shape[1])
    baseline = image_baseline(shape, baseline_hidden)
    model.train().requires_grad_(True)
    return Nets(
        generator=model,
        critic=critic,
        baseline=baseline,
        opt_generator=torch.optim.Adam(model.parameters(), lr=cfg.lr_generator),
        opt_critic=torch.optim.Adam(critic.parameters(), lr=cfg.lr_critic),
        opt_baseline=torch.optim.Adam(baseline.parameters(), lr=cfg.lr_baseline),
    )


def sft_pg(
    model,
    table,
    train_x,
    iterations: int,
    critic_widths,
    baseline_hidden,
    seed: int = 0,
    progress: bool = True,
    monitor=None,
    monitor_every: int = 10,
    **settings,
):
    """SFT-PG (B) (Algorithm 1 with the baseline regulariser) of ``model`` on ``table``; returns the
    fine-tuned model, the training seconds (monitoring excluded) and the monitor's records.
    ``settings`` override FinetuneConfig fields; ``monitor(model)`` (e.g. FID) runs every
    ``monitor_every`` iterations."""
    from tqdm.auto import tqdm

    from fewstep.sftpg import iteration

    cfg = FinetuneConfig(**{"estimator": "pg_baseline", "critic_reg": "baseline", **settings})
    shape = tuple(train_x.shape[1:])
    nets = make_nets(model, shape, cfg, critic_widths, baseline_hidden, seed)
    generator = torch.Generator().manual_seed(seed)

    def draw_real(m: int):
        return train_x[torch.randint(0, len(train_x), (m,), generator=generator)]

    seconds, curve = 0.0, []
    for i in tqdm(range(iterations), desc="SFT-PG", disable=not progress, leave=False):
        tick = time.perf_counter()
        stats = iteration(nets, table, cfg, draw_real, shape, generator, torch.device("cpu"))
        seconds += time.perf_counter() - tick
        if monitor is not None and ((i + 1) % monitor_every == 0 or i + 1 == iterations):
            curve.append({"iteration": i + 1, **monitor(nets.generator.eval()), "gap": stats.get("gap")})
            nets.generator.train()
    return nets.generator.eval().requires_grad_(False), seconds, curve


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write(name: str, budget: dict, floor: dict, rows: list[dict], panels, extra: dict | None = None) -> None:
    """JSON (the foundation's shape plus fid/kid), the sample-grid figure, and a printed table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"budget": budget, "floor": floor, "rows": rows, **(extra or {})}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    grid_figure(panels, {"fid": floor["fid"], "kid": floor["kid"]}, RESULTS / f"{name}.png")
    print(f"\n{name} (reduced budget: {json.dumps(budget)})")
    print(table_markdown(floor, rows))
    print(f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.png')}")


def table_markdown(floor: dict, rows: list[dict]) -> str:
    lines = [
        "| method | steps | FID | KID | W2 (pixels) | sampling s | training s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['fid']:.4f} | {r['kid']:.4f} | {r['w2']:.3f} | {r['seconds']:.1f} "
            f"| {r.get('train_seconds') or ''} |"
        )
    lines.append(
        f"| noise floor (two halves of held-out data) | | {floor['fid']:.4f} | {floor['kid']:.4f} "
        f"| {floor['w2']:.3f} | | |"
    )
    return "\n".join(lines)


def row(method: str, steps: int, result: dict, seconds: float, **extra) -> dict:
    """A JSON row: FID/KID on classifier features, W2/sliced W2 on flattened pixels, wall-clock seconds."""
    return {
        "method": method,
        "steps": steps,
        **{k: result["model"][k] for k in ("fid", "kid", "w2", "sw2")},
        "seconds": round(seconds, 2),
        **extra,
    }
