"""Toy data sets of the paper (Section 6.1, App. A) and user arrays from files.

Every toy generator is a pure function of ``(n, seed)`` so that training, evaluation and the
noise floor draw independent samples by using different seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import FewstepError

TOY_DATASETS = ("swiss_roll", "moons", "gaussian")


def swiss_roll(n: int, seed: int) -> np.ndarray:
    """scikit-learn's swiss roll (noise 0.05), coordinates 0 and 2, divided by 20."""
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n, noise=0.05, random_state=seed)
    return x[:, [0, 2]] / 20.0


def moons(n: int, seed: int) -> np.ndarray:
    """scikit-learn's two moons (noise 0.05), divided by 2."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return x / 2.0


def gaussian(n: int, seed: int) -> np.ndarray:
    """The Gaussian cluster of App. A: centre (0.5, 0.5), standard deviation 0.01."""
    return np.random.default_rng(seed).normal(0.5, 0.01, size=(n, 2))


def toy_data(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` float32 points [n, 2] of the named toy data set."""
    makers = {"swiss_roll": swiss_roll, "moons": moons, "gaussian": gaussian}
    if name not in makers:
        raise FewstepError(f"unknown data set {name!r}; choose one of {', '.join(TOY_DATASETS)} or 'file'")
    return torch.from_numpy(makers[name](n, seed)).float()


def load_array(path: str | Path) -> torch.Tensor:
    """A user array [N, D] of finite numbers from .npy, .npz (a single array) or .csv (no header)."""
    path = Path(path)
    if not path.is_file():
        raise FewstepError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise FewstepError(f"data file {path} holds {len(archive.files)} arrays {archive.files}; expected exactly one")
                array = archive[archive.files[0]]
        elif path.suffix == ".csv":
            array = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise FewstepError(f"data file {path} has suffix {path.suffix!r}; expected .npy, .npz or .csv")
    except FewstepError:
        raise
    except Exception as exc:  # numpy's own messages are clear but multi-part: keep one line
        raise FewstepError(f"cannot read data file {path}: {str(exc).splitlines()[0]}") from None
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise FewstepError(f"data file {path} has shape {array.shape}; expected [N, D] with N >= 2 points")
    if not np.issubdtype(array.dtype, np.number):
        raise FewstepError(f"data file {path} has dtype {array.dtype}; expected numbers")
    if not np.isfinite(array).all():
        raise FewstepError(f"data file {path} contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


class DataSource:
    """Training points and fresh evaluation draws for a ``DataConfig``.

    Toy sets draw new points for every seed. A file is finite: evaluation draws are random
    subsets, and the noise floor compares two disjoint halves.
    """

    def __init__(self, config):
        self.config = config
        self._train: torch.Tensor | None = None
        self._file = load_array(config.path) if config.name == "file" else None
        if config.name in ("digits", "mnist", "cifar10", "folder"):  # finite image sets [N, C, H, W]
            from .images.data import load_images

            self._file = load_images(config.name, config.path, config.image_size)[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train().shape[1:])

    def train(self) -> torch.Tensor:
        """The training set (a file's whole array, or the toy draw of ``data.seed``), made once."""
        if self._file is not None:
            return self._file
        if self._train is None:
            self._train = toy_data(self.config.name, self.config.n_train, self.config.seed)
        return self._train

    def draw(self, n: int, seed: int) -> torch.Tensor:
        if self._file is None:
            return toy_data(self.config.name, n, seed)
        g = torch.Generator().manual_seed(seed)
        return self._file[torch.randperm(len(self._file), generator=g)[: min(n, len(self._file))]]

    def floor_pair(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent data samples of equal size for the noise floor."""
        if self._file is None:
            return toy_data(self.config.name, n, seed), toy_data(self.config.name, n, seed + 1)
        g = torch.Generator().manual_seed(seed)
        half = min(n, len(self._file) // 2)
        perm = torch.randperm(len(self._file), generator=g)
        return self._file[perm[:half]], self._file[perm[half : 2 * half]]
