"""FID, KID and IS against independent float64 references; extractors and torch-fidelity plumbing."""

import numpy as np
import pytest
import torch

from sdm.metrics.extractors import FMNISTExtractor, InceptionExtractor, register_with_torch_fidelity
from sdm.metrics.quality import evaluate_quality, inception_score, kid


def _reference_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out in float64."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_matches_float64_reference_on_synthetic_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16))
    y = rng.normal(size=(120, 16)) * 1.2 + 0.3
    mean, std = kid(x, y, subset_size=120, subsets=1)
    assert mean == pytest.approx(_reference_kid(x, y), rel=1e-9) and std == 0


def test_kid_of_identical_distributions_is_near_zero_and_grows_with_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    near = kid(a, b, subset_size=200, subsets=20)[0]
    far = kid(a, b + 1.0, subset_size=200, subsets=20)[0]
    assert abs(near) < 0.05 * far


def test_inception_score_by_hand():
    # Two confident, evenly used classes: p(y|x) one-hot-ish, p(y) uniform -> IS close to 2.
    logits = np.tile(np.array([[20.0, 0.0], [0.0, 20.0]]), (50, 1))
    mean, _ = inception_score(logits, splits=1)
    assert mean == pytest.approx(2.0, rel=1e-6)
    assert inception_score(np.zeros((10, 5)), splits=1)[0] == pytest.approx(1.0)


def test_fmnist_metrics_are_labelled_as_proxies(fake_fmnist):
    images = np.load(fake_fmnist)["x_train"][..., None]
    results, notes = evaluate_quality(images, FMNISTExtractor(), metrics=("fid", "kid", "is"))
    assert [r.metric for r in results] == ["FID-FMNIST", "IS-FMNIST"] and notes == ["KID needs --reference (real images)"]
    assert all(not r.comparable_with_papers and "not comparable" in r.label() for r in results)


def test_registered_torch_fidelity_extractor_agrees_with_ours(fake_fmnist):
    import torch_fidelity

    register_with_torch_fidelity()
    data = np.load(fake_fmnist)
    a, b = data["x_train"][..., None], data["x_test"][..., None]

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return torch.from_numpy(self.x[i]).permute(2, 0, 1).expand(3, -1, -1).contiguous()

    theirs = torch_fidelity.calculate_metrics(input1=Images(a), input2=Images(b), feature_extractor="sdm-fmnist",
                                              fid=True, cuda=False, verbose=False, cache=False, batch_size=16)
    ours, _ = evaluate_quality(a, FMNISTExtractor(), metrics=("fid",), reference=b, reference_name="b")
    assert ours[0].value == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)


def test_inception_route_runs_offline_with_local_weights(tmp_path, fake_fmnist, monkeypatch):
    """Plumbing only: random Inception weights saved locally stand in for the real file."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception
    from safetensors.torch import save_file

    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    torch.manual_seed(0)
    random_net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    save_file({k: v.contiguous() for k, v in random_net.state_dict().items()}, tmp_path / "inception.safetensors")
    extractor = InceptionExtractor(tmp_path / "inception.safetensors")
    images = np.load(fake_fmnist)["x_train"][:12, ..., None]
    results, _ = evaluate_quality(images, extractor, metrics=("fid", "is"), reference=images, reference_name="self")
    assert results[0].metric == "FID" and results[0].comparable_with_papers
    assert abs(results[0].value) < 1e-3  # a set against itself
    (tmp_path / "evil.pt").write_bytes(b"not a state dict")
    from sdm.errors import SDMError

    with pytest.raises(SDMError, match="not a plain state dict"):
        InceptionExtractor(tmp_path / "evil.pt")
