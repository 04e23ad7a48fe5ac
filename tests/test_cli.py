"""The foundation's commands: outputs on good input, one-line errors and no output on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sdm.commands import evaluate, sample, train_ann


def _run(command, args):
    return CliRunner().invoke(command.main, [str(a) for a in args])


def _one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert fragment in lines[0], lines[0]


def test_sample_writes_grid_npz_report(tiny_pipeline, tmp_path):
    result = _run(sample, ["--ckpt", tiny_pipeline, "--num-samples", 5, "--steps", 3, "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s" / "samples.npz") as npz:
        assert npz["images"].shape == (5, 16, 16, 1) and npz["seeds"].tolist() == [0, 1, 2, 3, 4]
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["sampler"] == "ddim" and report["images_per_second"] > 0
    assert (tmp_path / "s" / "grid.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--ckpt", "no/such-dir/"], "not found"),
        (["--ckpt", "google/ddpm-cifar10-32"], "could not fetch"),
        (["--num-samples", 0], "--num-samples"),
        (["--sampler", "euler"], "--sampler"),
        (["--steps", -3], "--steps"),
        (["--bogus-flag"], "--bogus-flag"),
    ],
)
def test_sample_bad_inputs(tmp_path, args, fragment):
    result = _run(sample, args + ["--out", tmp_path / "out"])
    _one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_train_ann_bad_inputs_write_nothing(tmp_path, fake_fmnist):
    out = tmp_path / "run"
    _one_line_error(_run(train_ann, ["--data", tmp_path / "x.npz", "--out", out]), "not found")
    _one_line_error(_run(train_ann, ["--data", fake_fmnist, "--out", out, "--steps", 0]), "--steps")
    _one_line_error(_run(train_ann, ["--data", fake_fmnist, "--out", out, "--preset", "huge"]), "--preset")
    assert not out.exists()


def test_cuda_without_gpu_is_a_clear_error(tmp_path, fake_fmnist, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = _run(train_ann, ["--data", fake_fmnist, "--out", tmp_path / "run", "--device", "cuda"])
    _one_line_error(result, "--device cpu")
    assert not (tmp_path / "run").exists()


def test_train_ann_cli_runs(tmp_path, fake_fmnist):
    result = _run(train_ann, ["--data", fake_fmnist, "--out", tmp_path / "run", "--preset", "tiny", "--steps", 2,
                              "--batch-size", 4])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_eval_on_sample_archive(tmp_path, fake_fmnist):
    x = np.load(fake_fmnist)["x_train"][..., None]
    np.savez(tmp_path / "s.npz", images=x)
    result = _run(evaluate, ["--samples", tmp_path / "s.npz", "--extractor", "fmnist", "--reference", fake_fmnist,
                             "--out", tmp_path / "fid.json"])
    assert result.exit_code == 0, result.output
    assert "FID-FMNIST = " in result.stdout and "not comparable" in result.stdout and "KID-FMNIST" in result.stdout
    report = json.loads((tmp_path / "fid.json").read_text())
    assert [r["metric"] for r in report["results"]] == ["FID-FMNIST", "KID-FMNIST", "IS-FMNIST"]
    assert report["results"][0]["n"] == 48


def test_eval_inception_offline_names_the_fix(tmp_path, fake_fmnist, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    x = np.load(fake_fmnist)["x_train"][..., None]
    np.savez(tmp_path / "s.npz", images=x)
    args = ["--samples", tmp_path / "s.npz", "--reference", fake_fmnist, "--metrics", "fid"]
    _one_line_error(_run(evaluate, args + ["--extractor", "inception"]), "--inception-weights")
    fallback = _run(evaluate, args)
    assert fallback.exit_code == 0 and "FID-FMNIST = " in fallback.stdout
    assert "reporting the FMNIST-classifier proxies instead" in fallback.stderr


def test_console_script_error_is_one_line(tmp_path):
    """The installed entry point, end to end: one line on stderr, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "sdm.commands.sample", "--ckpt", tmp_path / "missing"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr
