"""Figures: generated vs data scatter (paper Fig. 4), sampling paths (Fig. 7), training curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def scatter(panels: Sequence[tuple[str, torch.Tensor]], data: torch.Tensor, path: str | Path, max_points: int = 10_000) -> None:
    """One panel per (title, generated points): data in red, generated in blue (Fig. 4 style)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    d = _np(data)[:max_points]
    lo, hi = d.min(0) - 0.25 * np.ptp(d, 0), d.max(0) + 0.25 * np.ptp(d, 0)
    for ax, (title, points) in zip(axes[0], panels):
        p = _np(points)[:max_points]
        ax.scatter(d[:, 0], d[:, 1], s=1, c="tab:red", alpha=0.4, label="data")
        ax.scatter(p[:, 0], p[:, 1], s=1, c="tab:blue", alpha=0.4, label="generated")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(title)
        ax.set_aspect("equal")
    axes[0][0].legend(loc="upper left", markerscale=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sampling_paths(panels: Sequence[tuple[str, torch.Tensor]], path: str | Path, target=None, max_paths: int = 50) -> None:
    """Every step of the sampling chains, darker towards the final sample (Fig. 7 style).

    Each panel's tensor is a trajectory ``x`` of shape [K + 1, n, 2] (``Trajectory.x``).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, xs) in zip(axes[0], panels):
        xs = _np(xs)[:, :max_paths]
        K = xs.shape[0] - 1
        for i in range(xs.shape[1]):
            ax.plot(xs[:, i, 0], xs[:, i, 1], color="0.8", lw=0.5, zorder=1)
        for k in range(K + 1):
            ax.scatter(xs[k, :, 0], xs[k, :, 1], s=8, color=plt.cm.Blues(0.25 + 0.75 * k / max(K, 1)), zorder=2,
                       label="x_T" if k == 0 else ("x_0" if k == K else None))
        if target is not None:
            ax.scatter([target[0]], [target[1]], s=60, c="red", marker="*", zorder=3, label="data centre")
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, xlabel: str, ylabel: str,
           floor: float | None = None, logy: bool = False, title: str | None = None) -> None:
    """Lines ``name -> (x, y)``, with the noise floor as a dashed line when given."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 20 else None, ms=3)
    if floor is not None:
        ax.axhline(floor, ls="--", c="k", lw=1, label="noise floor")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
