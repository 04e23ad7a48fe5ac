"""`sdm-convert` end to end on a tiny model, and its one-line errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from convert import cli
from sdm.commands import sample

FAST = ["--calib-samples", 32, "--probes", 4, "--steps", 3, "--batch-size", 16]


def _run(command, args):
    return CliRunner().invoke(command.main, [str(a) for a in args])


def _one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], result.stderr


@pytest.fixture(scope="module")
def converted(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "run"
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--num-samples", 3, "--save-samples", "--out", out, *FAST])
    assert result.exit_code == 0, result.output
    return out


def test_report_and_outputs(converted):
    report = json.loads((converted / "report.json").read_text())
    for key in ("ckpt", "T", "neuron", "calibration", "convert_seconds", "eps_cosine", "eps_rel_mse",
                "eps_cosine_t_lt_100", "analog_ops", "firing_rate"):
        assert key in report, key
    assert report["T"] == 2 and report["calibration"]["rule"] == "mse" and report["calibration"]["source"] == "trajectory"
    assert report["analog_ops"]["group_norm"] > 0 and 0 < report["firing_rate"] < 1
    # the tiny UNet's down- and upsampler and its four up-block shortcuts read the residual stream
    assert "up_blocks.0.upsamplers.0.conv" in report["window_accumulated"] and len(report["window_accumulated"]) == 6
    assert report["per_step_analog"] == []
    assert report["energy"]["quantised_ann"]["activation_bits"] == 3  # 2T + 1 = 5 levels at T = 2
    for name in ("ann", "snn"):
        with np.load(converted / f"samples_{name}.npz") as npz:
            assert npz["images"].shape == (3, 16, 16, 1) and npz["images"].dtype == np.uint8
        assert (converted / f"samples_{name}.png").is_file()
    assert (converted / "comparison.png").is_file() and (converted / "calibration_stats.json").is_file()


def test_converted_model_samples_through_sdm_sample(converted, tmp_path):
    result = _run(sample, ["--ckpt", converted / "snn", "--num-samples", 2, "--steps", 2, "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "report.json").read_text())["ckpt"].endswith("snn")


def test_saved_statistics_are_reused(converted, tiny_pipeline, tmp_path):
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 3, "--stats", converted / "calibration_stats.json",
                        "--num-samples", 0, "--out", tmp_path / "again", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["T"] == 3 and not (tmp_path / "again" / "samples_snn.png").exists()


def test_bare_model_directory_notes_the_assumed_schedule(tiny_pipeline, tmp_path):
    result = _run(cli, ["--ckpt", tiny_pipeline / "unet", "--num-samples", 0, "--out", tmp_path / "bare", *FAST])
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "bare" / "report.json").read_text())["notes"]
    assert any("assumed the DDPM linear schedule" in n for n in notes)


@pytest.mark.parametrize("args, fragment", [
    (["--T", 0], "--T"),
    (["--calib", "kl"], "--calib"),
    (["--calib-source", "data"], "--data"),
    (["--ckpt", "./missing"], "not found"),
    (["--neuron", "izhikevich"], "--neuron"),
])
def test_bad_inputs_write_nothing(tiny_pipeline, tmp_path, args, fragment):
    ckpt = [] if "--ckpt" in args else ["--ckpt", tiny_pipeline]
    result = _run(cli, [*ckpt, *args, "--out", tmp_path / "out"])
    _one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_refuses_spiking_models_foreign_stats_and_foreign_out(converted, tiny_pipeline, tmp_path):
    from sdm.presets import build_unet
    from sdm.pretrained import DDPM_LINEAR_SCHEDULE, save_pipeline
    from sdm.spiking_unet import SPIKING_PRESETS, SpikingUNet

    _one_line_error(_run(cli, ["--ckpt", converted / "snn", "--out", tmp_path / "o"]), "already a spiking model")
    save_pipeline(SpikingUNet(**SPIKING_PRESETS["tiny"], T=2), DDPM_LINEAR_SCHEDULE, tmp_path / "sdm")
    _one_line_error(_run(cli, ["--ckpt", tmp_path / "sdm", "--out", tmp_path / "o"]),
                    "already a spiking model (SpikingUNet); calibrate and convert the ANN")

    save_pipeline(build_unet("tiny", layers_per_block=2), DDPM_LINEAR_SCHEDULE, tmp_path / "other")
    _one_line_error(_run(cli, ["--ckpt", tmp_path / "other", "--stats", converted / "calibration_stats.json",
                               "--out", tmp_path / "o"]), "another model")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    _one_line_error(_run(cli, ["--ckpt", tiny_pipeline, "--out", tmp_path / "mine"]), "not an earlier sdm-convert output")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert not (tmp_path / "o").exists()
