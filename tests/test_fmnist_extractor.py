"""The shipped FID-FMNIST extractor: loads, prepares any image shape, and has consistent statistics."""

import numpy as np
import pytest
import torch

from sdm.errors import SDMError
from sdm.metrics.fmnist_extractor import (
    FEATURE_DIM,
    extract_features,
    load_extractor,
    load_reference,
    prepare,
)
from sdm.metrics.frechet import frechet_distance


def test_shipped_weights_and_reference():
    net = load_extractor()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    mu, sigma, info = load_reference()
    assert mu.shape == (FEATURE_DIM,) and sigma.shape == (FEATURE_DIM, FEATURE_DIM)
    assert info["n"] == 10_000 and np.allclose(sigma, sigma.T)
    assert np.linalg.eigvalsh(sigma).min() > -1e-8
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_prepare_maps_any_image_to_grey_28():
    rgb32 = np.full((2, 32, 32, 3), 255, np.uint8)
    x = prepare(rgb32)
    assert x.shape == (2, 1, 28, 28) and torch.allclose(x, torch.ones_like(x), atol=1e-4)
    grey = np.zeros((3, 28, 28, 1), np.uint8)
    assert torch.equal(prepare(grey), -torch.ones(3, 1, 28, 28))
    with pytest.raises(SDMError, match="uint8"):
        prepare(np.zeros((2, 28, 28), np.float32))


def test_features_do_not_depend_on_batching():
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28, 1), dtype=np.uint8)
    net = load_extractor()
    np.testing.assert_allclose(extract_features(images, net, batch_size=7), extract_features(images, net, batch_size=2),
                               rtol=1e-5, atol=1e-6)
