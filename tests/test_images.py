"""Image support: U-Net, readers, critic/baseline, classifier FID/KID, pretraining on digits."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from fewstep.config import load_config
from fewstep.data import DataSource
from fewstep.errors import FewstepError
from fewstep.images.critic import ConvCritic, image_baseline
from fewstep.images.data import load_cifar10, load_cifar_batch, load_folder, load_images, load_mnist, read_idx
from fewstep.images.fid import DigitClassifier, FeatureExtractor, fid_kid
from fewstep.plots import save_grid
from fewstep.images.unet import UNet
from fewstep.models import build_eps_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions on a shared 2-core machine: OpenMP threads spin against other processes
    and can run 100x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("size,mult,attn", [(8, (1, 2), (4,)), (12, (1, 2, 2), (3,)), (9, (1, 2), ())])
def test_unet_shapes_and_time_conditioning(size, mult, attn):
    torch.manual_seed(0)
    net = UNet(1, size, channels=8, channel_mult=mult, num_res_blocks=1, attention_resolutions=attn)
    x = torch.randn(3, 1, size, size)
    out = net(x, torch.tensor([0.0, 3.0, 7.0]))
    assert out.shape == x.shape
    # The output depends on t: same image, different times give different outputs.
    same = x[:1].expand(2, -1, -1, -1)
    pair = net(same, torch.tensor([1.0, 9.0]))
    assert (pair[0] - pair[1]).abs().max() > 1e-4
    # Batch independence: a row's output does not depend on the other rows (GroupNorm, not BatchNorm).
    assert torch.allclose(net(x[1:2], torch.tensor([3.0])), out[1:2], atol=1e-5)


def test_unet_attention_is_used_where_asked():
    net = UNet(1, 8, channels=8, channel_mult=(1, 2), attention_resolutions=(8,))
    plain = UNet(1, 8, channels=8, channel_mult=(1, 2))
    n_attn = lambda m: sum(type(mod).__name__ == "Attention" for mod in m.modules())  # noqa: E731
    assert n_attn(plain) == 1  # the middle block
    assert n_attn(net) == 1 + 1 + 2  # middle, one down block at 8x8, two up blocks at 8x8


def _write_idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader_scales_to_unit_range(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(5), gz)
    x, y = load_mnist(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.from_numpy(images / 127.5 - 1).float(), atol=1e-6)
    assert x.min() == -1 and x.max() == 1
    assert y.tolist() == [0, 1, 2, 3, 4]


def test_mnist_reader_errors(tmp_path):
    with pytest.raises(FewstepError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(FewstepError, match="no MNIST IDX"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(FewstepError, match="not an IDX file"):
        load_mnist(tmp_path)
    _write_idx(tmp_path / "bad", np.zeros((2, 3, 3)), gz=False)
    (tmp_path / "bad").write_bytes((tmp_path / "bad").read_bytes()[:-1])
    with pytest.raises(FewstepError, match="header"):
        read_idx(tmp_path / "bad")


def test_shared_mnist_test_set_loads():
    x, y = load_images("mnist", "/work/shared/data/mnist", image_size=14) if _has_mnist() else pytest.skip("no MNIST")
    assert x.shape == (10_000, 1, 14, 14) and len(y) == 10_000 and -1 <= x.min() < x.max() <= 1


def _has_mnist():
    from pathlib import Path

    return (Path("/work/shared/data/mnist") / "t10k-images-idx3-ubyte.gz").is_file()


def test_cifar_reader(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
    (tmp_path / "data_batch_1").write_bytes(
        pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4], b"batch_label": b"x"})
    )
    x, y = load_cifar10(tmp_path)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [1, 2, 3, 4]
    assert torch.allclose(x[1, 2, 0, :3], torch.from_numpy(data[1, 2048:2051] / 127.5 - 1).float(), atol=1e-6)


def test_cifar_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(FewstepError, match="refusing to load global builtins.print"):
        load_cifar_batch(tmp_path / "data_batch_1")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(FewstepError, match="expected uint8"):
        load_cifar10(tmp_path)


def test_folder_reader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)).save(tmp_path / f"{i}.png")
    x = load_folder(tmp_path)
    assert x.shape == (3, 3, 10, 10) and -1 <= x.min() and x.max() <= 1
    assert load_folder(tmp_path, image_size=4).shape == (3, 3, 4, 4)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FewstepError, match="cannot read image"):
        load_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FewstepError, match="no PNG or JPEG"):
        load_folder(tmp_path / "empty")


def test_digits_default_and_config_dispatch():
    config = load_config(None, ["data.name=digits", "model.kind=unet", "model.channels=8"])
    data = DataSource(config.data)
    assert data.shape == (1, 8, 8)
    assert data.train().min() == -1 and data.train().max() == 1
    model = build_eps_model(config.model, data.shape)
    assert isinstance(model, UNet)
    with pytest.raises(FewstepError, match="data.path is required"):
        DataSource(load_config(None, ["data.name=mnist"]).data)
    with pytest.raises(FewstepError, match="takes images"):
        build_eps_model(config.model, (2,))


@pytest.mark.parametrize("size", [8, 14, 28, 32])
def test_critic_and_baseline_shapes(size):
    critic = ConvCritic(1, widths=(4, 8, 16), resolution=size)
    x = torch.randn(5, 1, size, size)
    assert critic(x).shape == (5, 1)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 4 and [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)]
    baseline = image_baseline((1, size, size), hidden=(16, 16, 8))
    v = baseline(x, torch.arange(5.0))
    assert v.shape == (5, 1)
    assert not torch.allclose(
        baseline(x[:1].expand(2, -1, -1, -1), torch.tensor([0.0, 4.0]))[0],
        baseline(x[:1].expand(2, -1, -1, -1), torch.tensor([0.0, 4.0]))[1],
    )


def test_paper_critic_on_cifar_size_ends_in_one_position():
    critic = ConvCritic(3, resolution=32)
    assert critic.out(critic.features(torch.zeros(1, 3, 32, 32))).shape == (1, 1, 1, 1)


def _features():
    torch.manual_seed(0)
    return FeatureExtractor(DigitClassifier(1, 10, width=8, num_features=16))


def test_fid_kid_identical_sets_near_zero_shifted_sets_positive():
    x, _ = load_images("digits")
    feats = _features()
    same = fid_kid(x[:400], x[:400], feats, kid_subsets=5, kid_subset_size=200)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid"]) < 1e-3
    shifted = fid_kid((x[:400] + 0.5).clamp(-1, 1), x[:400], feats, kid_subsets=5, kid_subset_size=200)
    assert shifted["fid"] > 1e-3 and shifted["kid"] > 1e-4 and shifted["fid"] > 1e6 * abs(same["fid"])


def test_fid_matches_closed_form_on_features():
    """FID through torchmetrics equals ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2) computed here."""
    from scipy import linalg

    x, _ = load_images("digits")
    feats = _features()
    a, b = x[:300], torch.flip(x[300:600], dims=[3])
    fa, fb = feats(a).double().numpy(), feats(b).double().numpy()
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)  # noqa: E501
    got = fid_kid(b, a, feats, kid_subsets=2, kid_subset_size=100)["fid"]
    assert got == pytest.approx(expected, rel=1e-3)


def test_image_evaluation_reports_the_floor_on_held_out_halves(tmp_path, monkeypatch):
    from fewstep.evaluation import Evaluator

    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    config = load_config(None, ["data.name=digits", "evaluate.n_samples=150"])
    data = DataSource(config.data)
    assert len(data.train()) == 1797 - round(0.2 * 1797)  # the held-out split never trains anything
    result = Evaluator(data, config.evaluate).score_samples(torch.rand(150, 1, 8, 8) * 2 - 1)
    assert result["n"] == 150 and result["floor"]["fid"] < result["model"]["fid"]
    assert set(result["model"]) == {"fid", "kid", "precision", "recall", "density", "coverage"}
    assert result["floor"]["precision"] > result["model"]["precision"]
    assert list((tmp_path / "features").glob("digits-*.safetensors"))  # the feature classifier is cached


def test_save_grid(tmp_path):
    from PIL import Image

    x, _ = load_images("digits")
    save_grid(x[:10], tmp_path / "g.png", nrow=4, scale=2)
    im = Image.open(tmp_path / "g.png")
    assert im.size == (2 * (4 * 9 + 1), 2 * (3 * 9 + 1))


def test_inception_needs_local_weights():
    from fewstep.images.fid import InceptionFeatures

    with pytest.raises(FewstepError, match="downloads nothing"):
        InceptionFeatures(None)


def test_pretrain_unet_on_digits(tmp_path):
    from fewstep.models import load_pretrained
    from fewstep.runs import Run
    from fewstep.training.pretrain import pretrain

    config = load_config(
        None,
        [
            "data.name=digits",
            "model.kind=unet",
            "model.channels=8",
            "pretrain.steps=3",
            "pretrain.batch_size=8",
            "pretrain.log_every=1",
        ],
    )
    run = Run(tmp_path / "run", config, "pretrain").start()
    model = pretrain(config, run, progress=False).model
    assert len(run.metrics("pretrain")) == 3
    loaded = load_pretrained(run.checkpoint("pretrain"))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 5.0])
    assert loaded.meta["shape"] == [1, 8, 8] and torch.allclose(loaded.model(x, t), model(x, t))


def test_classifier_features_are_cached_and_standardised(tmp_path):
    from fewstep.images.fid import accuracy, classifier_features

    x, y = load_images("digits")
    path = tmp_path / "clf.safetensors"
    first = classifier_features(path, x[:600], y[:600], epochs=4)
    assert path.is_file()
    feats = first(x[:600])
    assert torch.allclose(feats.mean(0), torch.zeros(first.num_features), atol=1e-4)
    assert accuracy(first.classifier, x[1200:], y[1200:]) > 0.5  # learnt something (10 classes: chance 0.1)
    again = classifier_features(path, x[:600], None)  # loaded, not retrained (no labels needed)
    assert torch.equal(again(x[:50]), first(x[:50]))
    with pytest.raises(FewstepError, match="not a FID classifier"):
        classifier_features(path, torch.zeros(4, 1, 5, 5), None)
