"""Writes step_outputs.safetensors and step_thresholds.json: the embedded DDPM converted at T = 4 and
run by the step executor on fixed inputs, as the pass built it before window accumulation (commit
98001b6, where layers reading the analog residual stream multiplied at every step). The test of the
rewrite holds today's step executor to these outputs.

    python tests/data/make_step_outputs.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
from convert import convert
from sdm.io import write_json
from sdm.models.pretrained import load_model

HERE = Path(__file__).parent


def inputs():
    g = torch.Generator().manual_seed(11)
    return torch.randn(4, 1, 28, 28, generator=g), torch.tensor([999, 500, 120, 20])


if __name__ == "__main__":
    loaded = load_model()
    observed = calibrate(prepare(loaded.model, ConversionConfig(T=4)),
                         calibration_pairs(loaded.model, loaded.scheduler_config, 32), progress=False)
    snn = convert(observed)
    snn.set_executor("steps")
    x, t = inputs()
    with torch.no_grad():
        out = snn(x, t).sample
    save_file({"x": x, "t": t, "out": out.contiguous()}, HERE / "step_outputs.safetensors")
    write_json(snn.thresholds, HERE / "step_thresholds.json")
