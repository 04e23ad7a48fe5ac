import numpy as np
import pytest
import torch
from PIL import Image

from sdm.diffusion.data import load_dataset
from sdm.diffusion.images import to_model_range
from sdm.errors import SDMError


def test_npz_is_padded_centred_on_black(fake_fmnist):
    raw = np.load(fake_fmnist)["x_train"]
    images = load_dataset(fake_fmnist, 32, 1)
    assert images.shape == (48, 1, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0, 2:30, 2:30], torch.from_numpy(raw))
    assert images[:, :, :2].sum() == 0 and images[:, :, :, 30:].sum() == 0


def test_npz_test_split_and_limit(fake_fmnist):
    images = load_dataset(fake_fmnist, 28, 1, split="test", limit=5)
    assert torch.equal(images[:, 0], torch.from_numpy(np.load(fake_fmnist)["x_test"][:5]))


def test_grey_to_rgb_and_model_range(fake_fmnist):
    images = load_dataset(fake_fmnist, 28, 3)
    assert images.shape == (48, 3, 28, 28)
    assert torch.equal(images[:, 0], images[:, 2])
    x = to_model_range(images)
    assert x.min() == -1.0 and x.max() <= 1.0


def test_rgb_to_grey_uses_luminance(tmp_path):
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    np.savez(tmp_path / "rgb.npz", images=rgb)
    grey = load_dataset(tmp_path / "rgb.npz", 8, 1)
    assert grey.unique().tolist() == [round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)]


def test_channels_first_and_float_arrays(tmp_path):
    x = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x)
    images = load_dataset(tmp_path / "f.npz", 16, 3)
    assert torch.equal(images, torch.from_numpy(np.round(x * 255).astype(np.uint8)))


def test_resize_when_far_from_size(fake_fmnist):
    assert load_dataset(fake_fmnist, 64, 1).shape == (48, 1, 64, 64)
    assert load_dataset(fake_fmnist, 16, 1).shape == (48, 1, 16, 16)


def test_image_folder(tmp_path):
    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((30, 30, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    images = load_dataset(tmp_path / "imgs", 32, 1)
    assert images.shape == (3, 1, 32, 32)
    assert images[2, 0, 16, 16] == 80


def test_bad_sources(tmp_path, fake_fmnist):
    with pytest.raises(SDMError, match="not found"):
        load_dataset(tmp_path / "missing.npz", 28, 1)
    np.savez(tmp_path / "nokey.npz", labels=np.zeros(3))
    with pytest.raises(SDMError, match="no image array"):
        load_dataset(tmp_path / "nokey.npz", 28, 1)
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 5), np.uint8))
    with pytest.raises(SDMError, match="expected images shaped"):
        load_dataset(tmp_path / "shape.npz", 28, 1)
    np.savez(tmp_path / "range.npz", x=np.full((2, 8, 8), 7.0))
    with pytest.raises(SDMError, match="uint8 pixels or floats"):
        load_dataset(tmp_path / "range.npz", 8, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SDMError, match="holds no images"):
        load_dataset(tmp_path / "empty", 28, 1)
    (tmp_path / "note.txt").write_text("x")
    with pytest.raises(SDMError, match="neither"):
        load_dataset(tmp_path / "note.txt", 28, 1)
    with pytest.raises(SDMError, match="split"):
        load_dataset(fake_fmnist, 28, 1, split="validation")


def test_torchvision_name_offline_says_pass_data(monkeypatch):
    import torchvision

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(SDMError, match="pass --data PATH") as err:
        load_dataset("fashion-mnist", 28, 1)
    assert "\n" not in str(err.value)
