"""`sdm-convert` end to end on a tiny model, and its one-line errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from convert.commands import convert as cli
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
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--per-site", "--num-samples", 3, "--save-samples", "--out", out,
                        *FAST])
    assert result.exit_code == 0, result.output
    return out


def test_report_and_outputs(converted):
    report = json.loads((converted / "report.json").read_text())
    for key in ("ckpt", "T", "conversion", "calibration", "convert_seconds", "eps_cosine", "eps_rel_mse",
                "eps_cosine_t_lt_100", "analog_ops", "firing_rate"):
        assert key in report, key
    assert report["T"] == 2 and report["conversion"]["rule"] == "mse" and report["calibration"]["source"] == "trajectory"
    assert report["conversion"] == json.loads((converted / "calibration_stats.json").read_text())["config"]
    assert report["analog_ops"]["group_norm"] > 0 and 0 < report["firing_rate"] < 1
    # the tiny UNet's down- and upsampler and its four up-block shortcuts read the residual stream
    assert "up_blocks.0.upsamplers.0.conv" in report["window_accumulated"] and len(report["window_accumulated"]) == 6
    assert report["per_step_analog"] == []
    assert report["energy"]["quantised_ann"]["activation_bits"] == 3  # 2T + 1 = 5 levels at T = 2
    # The same statistics in the other spike code, drawn from the same seeds beside the chosen one.
    chosen = report["conversion"]["coding"]
    assert report["energy"]["coding"] == chosen
    assert report["other_code"]["coding"] == {"rate": "weighted", "weighted": "rate"}[chosen]
    assert report["other_code"]["energy_mJ_per_image"] > 0
    for name in ("ann", "snn", "other_code"):
        with np.load(converted / f"samples_{name}.npz") as npz:
            assert npz["images"].shape == (3, 16, 16, 1) and npz["images"].dtype == np.uint8
        assert (converted / f"samples_{name}.png").is_file()
    assert (converted / "comparison.png").is_file() and (converted / "calibration_stats.json").is_file()


def test_converted_model_samples_through_sdm_sample(converted, tmp_path):
    result = _run(sample, ["--ckpt", converted / "snn", "--num-samples", 2, "--steps", 2, "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "report.json").read_text())["ckpt"].endswith("snn")


def test_saved_statistics_are_reused(converted, tiny_pipeline, tmp_path):
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 3, "--per-site", "--stats", converted / "calibration_stats.json",
                        "--num-samples", 0, "--out", tmp_path / "again", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["T"] == 3 and not (tmp_path / "again" / "samples_snn.png").exists()
    # the statistics were observed per site: a per-channel conversion from them is refused, naming the file
    result = _run(cli, ["--ckpt", tiny_pipeline, "--per-channel", "--stats", converted / "calibration_stats.json",
                        "--num-samples", 0, "--out", tmp_path / "refused", *FAST])
    _one_line_error(result, "cannot serve this conversion: --per-channel needs per-channel statistics")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("length", [["--finetune-steps", 2], ["--finetune-minutes", 0.05]])
def test_fine_tuning_reports_energy_at_the_sampling_steps(tiny_pipeline, tmp_path, length):
    """--steps 3: the fine-tuning report's energy (before fine-tuning) is the conversion report's, both per
    image at 3 denoising steps (it once assumed 50 whatever --steps said). A run sized in minutes reports
    the steps it took."""
    out = tmp_path / "tuned"
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--num-samples", 0, *length,
                        "--finetune-batch-size", 4, "--pairs", 16, "--out", out, *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    steps = json.loads((out / "finetune" / "checkpoint" / "state.json").read_text())["step"]
    assert report["finetune"]["steps"] == steps and (length[0] == "--finetune-minutes" or steps == 2)
    assert report["energy"]["denoising_steps"] == 3
    assert json.loads((out / "finetune" / "report.json").read_text())["energy_denoising_steps"] == 3
    assert report["finetune"]["before"]["energy_mJ_per_image"] == pytest.approx(
        report["energy"]["per_image"]["energy_mJ"], rel=1e-9)


def test_an_energy_budget_chooses_the_sites_and_the_snn_is_the_chosen_one(converted, tiny_pipeline, tmp_path):
    """--energy-budget between the plain conversion's ratio and zero: the conversion spike-encodes inputs,
    its report measures the network it saved, and statistics without encoders are refused in one line."""
    plain = json.loads((converted / "report.json").read_text())["energy"]["energy_ratio_snn_to_ann"]
    out = tmp_path / "budget"
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--per-site", "--energy-budget", round(0.9 * plain, 4),
                        "--num-samples", 0, "--out", out, *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    choice = report["site_choice"]
    assert choice["start"]["energy_ratio"] == pytest.approx(plain, rel=1e-9)
    assert choice["end"]["energy_ratio"] == pytest.approx(report["energy"]["energy_ratio_snn_to_ann"], rel=1e-9)
    assert choice["met"] and choice["encode_sites"] and "energy budget" in result.output
    saved = json.loads((out / "snn" / "config.json").read_text())
    assert saved["encode_sites"] == choice["encode_sites"] and saved["analog_sites"] == choice["analog_sites"]
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--per-site", "--energy-budget", 0.5, "--stats",
                        converted / "calibration_stats.json", "--num-samples", 0, "--out", tmp_path / "refused", *FAST])
    _one_line_error(result, "--energy-budget chooses among the analog inputs")
    assert not (tmp_path / "refused").exists()


def test_bare_model_directory_notes_the_assumed_schedule(tiny_pipeline, tmp_path):
    result = _run(cli, ["--ckpt", tiny_pipeline / "unet", "--num-samples", 0, "--out", tmp_path / "bare", *FAST])
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "bare" / "report.json").read_text())["notes"]
    assert any("assumed the DDPM linear schedule" in n for n in notes)


@pytest.mark.parametrize("args, fragment", [
    (["--T", 0], "--T"),
    (["--calib", "kl"], "--calib"),
    (["--calib-source", "data"], "--data is needed to calibrate on data"),
    (["--analog-sites", "nowhere.*"], "--analog-sites pattern 'nowhere.*' matches no site"),
    (["--finetune-steps", 1, "--source", "data"], "--data is needed to fine-tune on data"),
    (["--finetune-minutes", 0], "--finetune-minutes"),
    (["--finetune-minutes", 1, "--coding", "rate", "--analog", "running"], "fine-tuning trains the exact rate form"),
    (["--ckpt", "./missing"], "not found"),
    (["--neuron", "izhikevich"], "--neuron"),
])
def test_bad_inputs_write_nothing(tiny_pipeline, tmp_path, args, fragment):
    ckpt = [] if "--ckpt" in args else ["--ckpt", tiny_pipeline]
    result = _run(cli, [*ckpt, *args, "--out", tmp_path / "out"])
    _one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_refuses_spiking_models_foreign_stats_and_foreign_out(converted, tiny_pipeline, tmp_path):
    from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE, save_pipeline
    from sdm.models.presets import build_unet
    from sdm.models.spiking_unet import SPIKING_PRESETS, SpikingUNet

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


def test_a_full_disk_is_one_line_and_leaves_no_output(tiny_pipeline, tmp_path, monkeypatch):
    """The disk fills while the SNN's weights are written: one line naming the file, and no --out at all."""
    import errno

    import convert.model

    def full(tensors, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(convert.model, "save_file", full)
    out = tmp_path / "out"
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--num-samples", 0, "--out", out, *FAST])
    assert result.exit_code == 2 and result.stderr.count("Error:") == 1  # after the calibration's progress bar
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: could not write or read '{out / 'snn' / 'diffusion_pytorch_model.safetensors'}': No space left on "
        "device; free space, fix the permissions or choose another path")
    assert not out.exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_a_full_disk_while_writing_the_report_names_the_report(tiny_pipeline, tmp_path, monkeypatch):
    """Text files are written through a temporary twin: the error names the file the user asked for."""
    import errno
    import pathlib

    real = pathlib.Path.write_text

    def full(self, text, *args, **kwargs):
        if ".report.json." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    out = tmp_path / "out"
    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--num-samples", 0, "--out", out, *FAST])
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith(
        f"Error: could not write or read '{out / 'report.json'}': No space left on device")
    assert not out.exists()


def test_thresholds_follow_the_calibration_inputs_not_the_sampling_flags(converted, tiny_pipeline, tmp_path):
    """The fixture sampled at --batch-size 16, seed 0: another sampling batch and seed give the same
    statistics, and sdm-compare's conversion of the same config the same thresholds."""
    from calibration import CalibrationInputs, ConversionConfig
    from convert.commands.compare import _conversions
    from convert.model import ConvertedUNet
    from sdm.models.pretrained import load_model

    result = _run(cli, ["--ckpt", tiny_pipeline, "--T", 2, "--per-site", "--num-samples", 0, "--out", tmp_path / "b64",
                        *FAST, "--batch-size", 64, "--seed", 7])
    assert result.exit_code == 0, result.output
    stats = [json.loads((d / "calibration_stats.json").read_text()) for d in (converted, tmp_path / "b64")]
    assert stats[0]["sites"] == stats[1]["sites"]
    assert {"seed": 0, "batch_size": 64}.items() <= stats[1]["source"].items()
    compared = _conversions(load_model(tiny_pipeline), [2], ConversionConfig(T=2, per_channel=False),
                            CalibrationInputs(samples=32, probes=4))[0].model
    assert compared.current_thresholds() == ConvertedUNet.from_pretrained(converted / "snn").current_thresholds()
