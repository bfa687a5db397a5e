"""Figures: generated vs data scatter (paper Fig. 4), sampling paths (Fig. 7), image grids, curves.

Every figure that shows samples says what they score and the noise floor in its titles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .files import write_atomic  # noqa: E402


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _limits(*clouds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis limits that hold every finite point of every cloud, with a margin (a diverged
    sampler's points stay visible rather than falling outside the data's frame)."""
    points = np.concatenate([c[np.isfinite(c).all(1)] for c in clouds])
    lo, hi = np.percentile(points, 0.1, axis=0), np.percentile(points, 99.9, axis=0)
    pad = 0.1 * np.maximum(hi - lo, 1e-6)
    return lo - pad, hi + pad


def _save(fig, path: str | Path, tight: bool = True) -> None:
    """Write the figure atomically (a reader never sees half a PNG), in the format its suffix names."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))
    plt.close(fig)


def scatter(
    panels: Sequence[tuple[str, torch.Tensor]],
    data: torch.Tensor,
    path: str | Path,
    max_points: int = 10_000,
    suptitle: str | None = None,
) -> None:
    """One panel per (title, generated points): data in red, generated in blue (Fig. 4 style)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    d = _np(data)[:max_points]
    lo, hi = _limits(d, *[_np(p)[:max_points] for _, p in panels])
    for ax, (title, points) in zip(axes[0], panels):
        p = _np(points)[:max_points]
        ax.scatter(d[:, 0], d[:, 1], s=1, c="tab:red", alpha=0.4, label="data")
        ax.scatter(p[:, 0], p[:, 1], s=1, c="tab:blue", alpha=0.4, label="generated")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_aspect("equal")
    axes[0][0].legend(loc="upper left", markerscale=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    _save(fig, path)


def sampling_paths(
    panels: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    data: torch.Tensor | None = None,
    target=None,
    max_paths: int = 50,
) -> None:
    """Every step of the sampling chains, darker towards the final sample (Fig. 7 style), over the data.

    Each panel's tensor is a trajectory ``x`` of shape [K + 1, n, 2] (``Trajectory.x``).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, xs) in zip(axes[0], panels):
        xs = _np(xs)[:, :max_paths]
        K = xs.shape[0] - 1
        if data is not None:
            d = _np(data)[:5000]
            ax.scatter(d[:, 0], d[:, 1], s=1, c="tab:red", alpha=0.15, zorder=0, label="data")
        for i in range(xs.shape[1]):
            ax.plot(xs[:, i, 0], xs[:, i, 1], color="0.8", lw=0.5, zorder=1)
        for k in range(K + 1):
            ax.scatter(
                xs[k, :, 0],
                xs[k, :, 1],
                s=8,
                color=plt.cm.Blues(0.25 + 0.75 * k / max(K, 1)),
                zorder=2,
                label="x_T" if k == 0 else ("x_0" if k == K else None),
            )
        if target is not None:
            ax.scatter([target[0]], [target[1]], s=60, c="red", marker="*", zorder=3, label="data centre")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    floor: float | None = None,
    logy: bool = False,
    title: str | None = None,
    spread: dict[str, Sequence[float]] | None = None,
) -> None:
    """Lines ``name -> (x, y)`` (with a +-1 sd band from ``spread``), and the noise floor as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab20" if len(series) > 10 else "tab10").colors  # distinct colours for every line
    for i, (name, (x, y)) in enumerate(series.items()):
        (line,) = ax.plot(x, y, label=name, marker="o" if len(x) < 20 else None, ms=3, color=colours[i % len(colours)])
        if spread and name in spread:
            y, sd = np.asarray(y, dtype=float), np.asarray(spread[name], dtype=float)
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.2)
    if floor is not None:
        ax.axhline(floor, ls="--", c="k", lw=1, label="noise floor")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend()
    _save(fig, path)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    return ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images [N, C, H, W] in [-1, 1] into one uint8 array [rows*(H+pad)+pad, ..., C]."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    rows = -(-n // nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = arr[i]
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> None:
    """A PNG sample grid (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    im = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def grid_figure(
    panels: Sequence[tuple[str, torch.Tensor]], floor: dict[str, float], path: str | Path, nrow: int = 8
) -> None:
    """Sample grids side by side (titles carry each method's scores), the noise floor in the title."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels):
        grid = image_grid(images[: nrow * nrow], nrow)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(
        "noise floor (two halves of real data): " + ", ".join(f"{k.upper()} {v:.4g}" for k, v in floor.items()),
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # leave the top row to the floor line
    _save(fig, path, tight=False)
