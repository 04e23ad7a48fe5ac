"""sdm-sweep and sdm-compare on tiny models."""

import csv
import json

import pytest
from click.testing import CliRunner

from benchmarks import frontier
from calibration import ConversionConfig
from convert.commands import compare, sweep
from sdm.commands import train
from sdm.models.pretrained import EMBEDDED_NAME, EMBEDDED_SDM_NAME


def _run(command, args):
    return CliRunner().invoke(command.main, [str(a) for a in args])


SWEEP = ["--coding", "rate", "--calib", "max,percentile", "--percentile", "99,99.9", "--neuron", "if", "--calib-samples", 16,
         "--probes", 4, "--batch-size", 8]


def test_sweep_writes_tables_and_skips_finished_cells(tiny_pipeline, tmp_path):
    out = tmp_path / "sweep"
    first = _run(sweep, ["--ckpt", tiny_pipeline, *SWEEP, "--T", "2", "--out", out])
    assert first.exit_code == 0, first.output
    rows = (out / "sweep.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # max, percentile 99, percentile 99.9
    assert (out / "sweep.png").stat().st_size > 0 and "| T | rule |" in (out / "sweep.md").read_text()
    stamp = (out / "cells" / "T2_max_if.json").stat().st_mtime_ns
    again = _run(sweep, ["--ckpt", tiny_pipeline, *SWEEP, "--T", "2,8", "--out", out])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("done earlier, skipped") == 3 and "T8_max_if: eps cosine" in again.stderr
    assert (out / "cells" / "T2_max_if.json").stat().st_mtime_ns == stamp
    assert len((out / "sweep.csv").read_text().strip().splitlines()) == 1 + 6


def test_sweep_varies_the_spike_code(tiny_pipeline, tmp_path):
    """rate x (if, lif) and weighted x if: the weighted code has no leaky form, so that cell is left out; the
    weighted cells carry more levels for the same T, so their eps error is lower on this model."""
    out = tmp_path / "sweep"
    result = _run(sweep, ["--ckpt", tiny_pipeline, "--coding", "rate,weighted", "--neuron", "if,lif", "--calib", "mse",
                          "--T", "3", "--calib-samples", 16, "--probes", 4, "--batch-size", 8, "--out", out])
    assert result.exit_code == 0, result.output
    rows = {(r["coding"], r["neuron"]): r for r in csv.DictReader((out / "sweep.csv").open())}
    assert set(rows) == {("rate", "if"), ("rate", "lif"), ("weighted", "if")}
    assert (out / "cells" / "weighted_T3_mse_if.json").is_file() and (out / "cells" / "T3_mse_if.json").is_file()
    assert float(rows["weighted", "if"]["eps_rel_mse"]) < float(rows["rate", "if"]["eps_rel_mse"])
    lif_only = _run(sweep, ["--ckpt", tiny_pipeline, "--coding", "weighted", "--neuron", "lif", "--out", tmp_path / "s"])
    assert lif_only.exit_code != 0 and "--neuron if" in lif_only.stderr and not (tmp_path / "s").exists()


def test_sweep_with_a_sample_metric(tiny_pipeline, tmp_path):
    result = _run(sweep, ["--ckpt", tiny_pipeline, "--coding", "rate", "--T", 2, "--calib", "mse", "--calib-samples", 16, "--probes", 4,
                          "--fid", 4, "--steps", 2, "--extractor", "fmnist", "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    cell = json.loads((tmp_path / "s" / "cells" / "T2_mse_if.json").read_text())
    assert cell["sample_metric"] == "FID-FMNIST" and cell["sample_value"] > 0


@pytest.mark.parametrize("args, fragment", [(["--T", "2,0"], "--T"), (["--calib", "max,kl"], "--calib"),
                                            (["--percentile", "120"], "--percentile")])
def test_sweep_bad_lists(tiny_pipeline, tmp_path, args, fragment):
    result = _run(sweep, ["--ckpt", tiny_pipeline, *args, "--out", tmp_path / "s"])
    assert result.exit_code != 0 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_compare_tabulates_three_models(tiny_pipeline, fake_fmnist, tmp_path):
    from convert.commands import convert as convert_cli

    converted = _run(convert_cli, ["--ckpt", tiny_pipeline, "--T", 2, "--coding", "rate", "--per-site", "--calib-samples", 16,
                                   "--probes", 4, "--num-samples", 0, "--out", tmp_path / "conv"])
    assert converted.exit_code == 0, converted.output
    trained = _run(train, ["--data", fake_fmnist, "--out", tmp_path / "sdm", "--preset", "tiny", "--steps", 2,
                           "--batch-size", 4])
    assert trained.exit_code == 0, trained.output
    result = _run(compare, ["--ann", tiny_pipeline, "--convert-T", 3, "--calib-samples", 16,
                            "--converted", tmp_path / "conv" / "snn", "--direct", tmp_path / "sdm",
                            "--num-samples", 4, "--steps", 2, "--extractor", "fmnist", "--reference", fake_fmnist,
                            "--metrics", "fid,is", "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["ANN", "converted SNN", "converted SNN", "SDM (direct)"]
    assert all("FID-FMNIST" in r["metrics"] and r["energy_mJ_per_image"] > 0 for r in report["rows"])
    assert report["rows"][0]["firing_rate"] is None and 0 < report["rows"][3]["firing_rate"] < 1
    table = (tmp_path / "cmp" / "compare.md").read_text()
    code = ConversionConfig.coding  # the conversions run the default code
    assert f"| converted SNN | {code} | T=3, if, mse thresholds per channel, analog down_blocks.0.resnets.0.*, rate executor |" in table
    assert "| converted SNN | rate | T=2, if, mse thresholds, rate executor |" in table  # converted by sdm-convert --coding rate
    assert [r["code"] for r in report["rows"]] == ["", code, "rate", "rate"]  # the SDM's binary spikes: a rate code
    assert [r["executor"] for r in report["rows"]] == [None, "rate", "rate", None]  # the exact rate form by default
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0 and (tmp_path / "cmp" / "frontier.png").stat().st_size > 0
    assert [r["panel"] for r in report["rows"]] == ["ANN", f"SNN {code} T=3", "SNN rate T=2", "SDM (direct)"]
    assert all(r["seconds_per_image"] > 0 for r in report["rows"])
    work = tmp_path / "cmp" / "work"
    drawn = {p: p.stat().st_mtime_ns for p in work.glob("*/shard_*.npz")}
    assert len({p.parent for p in drawn}) == 4  # one cache entry per model
    again = _run(compare, ["--ann", "none", "--convert-T", "none", "--direct", tmp_path / "sdm", "--num-samples", 4, "--steps", 2,
                           "--extractor", "fmnist", "--reference", fake_fmnist, "--metrics", "fid",
                           "--work-dir", work, "--out", tmp_path / "again"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/shard_*.npz")} == drawn  # reused, not drawn again
    reused = json.loads((tmp_path / "again" / "compare.json").read_text())["rows"][0]
    assert reused["metrics"]["FID-FMNIST"] == report["rows"][3]["metrics"]["FID-FMNIST"]
    # Two outputs measured alike share one frontier; the SDM row, in both, is kept once.
    merged = _run(frontier, [tmp_path / "cmp" / "compare.json", tmp_path / "again" / "compare.json",
                             "--out", tmp_path / "frontier"])
    assert merged.exit_code == 0, merged.output
    rows = json.loads((tmp_path / "frontier" / "compare.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["ANN", "converted SNN", "converted SNN", "SDM (direct)"]
    assert (tmp_path / "frontier" / "frontier.png").stat().st_size > 0
    other = json.loads((tmp_path / "again" / "compare.json").read_text()) | {"num_samples": 8}
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused = _run(frontier, [tmp_path / "cmp" / "compare.json", tmp_path / "other.json", "--out", tmp_path / "f2"])
    assert refused.exit_code != 0 and "num_samples differ" in refused.stderr and not (tmp_path / "f2").exists()
    empty = _run(compare, ["--ann", "none", "--direct", "none", "--convert-T", "none", "--out", tmp_path / "none"])
    assert empty.exit_code != 0 and "at least one of" in empty.stderr
    orphan = _run(compare, ["--ann", "none", "--out", tmp_path / "none"])
    assert orphan.exit_code != 0 and "--convert-T converts the ANN" in orphan.stderr
    bad = _run(compare, ["--convert-T", "4,x", "--out", tmp_path / "none"])
    assert bad.exit_code != 0 and "--convert-T takes" in bad.stderr


def test_compare_defaults_are_the_embedded_models_and_the_anns_conversions(tmp_path):
    result = _run(compare, ["--num-samples", 2, "--steps", 1, "--calib-samples", 8, "--metrics", "is",
                            "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [(r["label"], r["details"].split(",")[0]) for r in rows] == [
        ("ANN", "UNet2DModel"), ("converted SNN", "T=4"), ("converted SNN", "T=8"), ("SDM (direct)", "T=4")]
    assert rows[0]["ckpt"] == EMBEDDED_NAME and rows[3]["ckpt"] == EMBEDDED_SDM_NAME
    assert rows[3]["details"] == "T=4, lif, TSM"
    assert all("per channel" in r["details"] and "analog down_blocks.0.resnets.0.*" in r["details"] for r in rows[1:3])


def test_direct_training_benchmark_pairs_each_comparison_with_a_bootstrap(tiny_pipeline, fake_fmnist, tmp_path):
    from benchmarks import direct_training

    common = ["--data", fake_fmnist, "--preset", "tiny", "--batch-size", 4]
    pre = _run(train, [*common, "--out", tmp_path / "pre", "--steps", 2])
    assert pre.exit_code == 0, pre.output
    tsm = _run(train, [*common, "--out", tmp_path / "tsm", "--stage", "tsm", "--init-from", tmp_path / "pre",
                       "--steps", 1])
    assert tsm.exit_code == 0, tsm.output
    result = _run(direct_training, ["--ann", tiny_pipeline, "--control", tmp_path / "pre", "--tsm", tmp_path / "tsm",
                                    "--scales", "0.5,1.0", "--num-samples", 6, "--sweep-samples", 4, "--steps", 2,
                                    "--resamples", 20, "--out", tmp_path / "bench"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench" / "results.json").read_text())
    fid = {r["model"]: float(r["FID-FMNIST"]) for r in report["rows"]}
    paired = report["paired_bootstrap"]
    first = paired["SDM TSM - SDM pre-spike (control)"]
    # the observed difference is the table's, and the interval brackets the resamples
    assert first["observed"] == pytest.approx(fid["SDM TSM"] - fid["SDM pre-spike (control)"], abs=2e-3)
    assert first["low"] <= first["high"] and first["resamples"] == 20 and 0 <= first["a_better"] <= 1
    best = min(report["sweep"], key=lambda s: s["fid"])["scale"]
    guided = f"SDM TSM, threshold scale {best:g} (best of the sweep)"
    assert (f"SDM TSM x{best:g} - SDM TSM" in paired) == (best != 1.0) == (guided in fid)
    assert [s["scale"] for s in report["sweep"]] == [0.5, 1.0] and report["sweep_samples"] == 4
    assert "Paired bootstrap: SDM TSM - SDM pre-spike (control)" in (tmp_path / "bench" / "table.md").read_text()
    assert (tmp_path / "bench" / "guidance.png").stat().st_size > 0


def test_frontier_reads_rows_from_before_the_weighted_code_as_rate_coded():
    old = {"num_samples": 4, "sampler": "ddim", "steps": 2, "seeds": [0, 3], "extractor": "x", "rows": [
        {"label": "ANN", "ckpt": "a", "details": "UNet2DModel", "panel": "ANN"},
        {"label": "converted SNN", "ckpt": "a", "details": "T=4", "panel": "SNN T=4"},
        {"label": "converted SNN", "ckpt": "b", "details": "T=4", "panel": "SNN weighted T=4", "code": "weighted"},
        {"label": "SDM (direct)", "ckpt": "c", "details": "T=4", "panel": "SDM (direct)"}]}
    rows = frontier.merged_rows([("old.json", old)])
    assert [(r["code"], r["panel"]) for r in rows] == [("", "ANN"), ("rate", "SNN rate T=4"),
                                                        ("weighted", "SNN weighted T=4"), ("rate", "SDM (direct)")]


def test_guidance_benchmark_scales_a_converted_models_thresholds(tiny_pipeline, fake_fmnist, tmp_path):
    from benchmarks import converted_guidance
    from convert.commands import convert as convert_cli

    converted = _run(convert_cli, ["--ckpt", tiny_pipeline, "--T", 2, "--calib-samples", 16, "--probes", 4,
                                   "--num-samples", 0, "--out", tmp_path / "conv"])
    assert converted.exit_code == 0, converted.output
    args = ["--model", f"{tiny_pipeline}={fake_fmnist}", "--scales", "1,2", "--num-samples", 3, "--work", tmp_path / "work",
            "--out", tmp_path / "guided"]
    result = _run(converted_guidance, [*args, "--snn", f"tiny={tmp_path / 'conv' / 'snn'}"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "guided" / "pipeline" / "results.json").read_text())["rows"]
    assert [(r["SNN"], r["scale"]) for r in rows] == [("ANN", ""), ("tiny", "1"), ("tiny", "2")]
    # Doubled thresholds: every neuron needs twice the drive per spike, so the network fires less and spends less.
    assert float(rows[2]["firing rate"]) < float(rows[1]["firing rate"])
    assert float(rows[2]["energy / image (mJ)"]) < float(rows[1]["energy / image (mJ)"])
    assert all(float(r["FID"]) >= 0 for r in rows)
    for name in ("frontier.png", "tiny-samples.png", "table.md"):
        assert (tmp_path / "guided" / "pipeline" / name).stat().st_size > 0
    bad = _run(converted_guidance, [*args, "--snn", f"a/b={tmp_path / 'conv' / 'snn'}"])
    assert bad.exit_code != 0 and "letters, digits" in bad.output and len(bad.output.strip().splitlines()) == 1
