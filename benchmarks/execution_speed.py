"""Execution speed, measured side by side in one run (issue 10's targets):

* converted-SNN sampling with the default executor against the ANN (T = 4 and 16; the `make demo` pair);
* the step executor against T ANN forwards (batch 64, T = 4, 8, 16);
* neurons against SpikingJelly's multi-step nodes, inference and forward + backward;
* one direct-training step of the spiking UNet against the same UNet with SpikingJelly's neurons.

    python -m benchmarks.execution_speed                  # CPU
    python -m benchmarks.execution_speed --device cuda    # the same on a GPU

SpikingJelly is a benchmark-only dependency (`pip install -e '.[bench]'`); without it its rows are
skipped and the table says so.
"""

from __future__ import annotations

import inspect
import statistics
import time
from pathlib import Path

import click
import torch

from benchmarks.common import markdown_table, provenance
from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
from convert import convert
from sdm.commands.options import command
from sdm.diffusion.sampler import sample
from sdm.io import write_json, write_text
from sdm.models.pretrained import load_model
from sdm.models.spiking_unet import SPIKING_PRESETS, SpikingUNet
from sdm.snn.compiled import compile_neurons, compiled_steps
from sdm.snn.neurons import IFNeuron, LIFNeuron, SpikingNeuron


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of `fn()` over `repeats` runs, after one warm-up run."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def jelly():
    """SpikingJelly's neuron module, or None when it is not installed."""
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None
    return neuron, surrogate


def jelly_node(kind: str, threshold: float = 1.0, tau: float = 2.0, backend: str | None = None):
    """SpikingJelly's multi-step node with our dynamics: reset by subtraction, input not scaled by 1/tau,
    the arctan surrogate of the same slope."""
    neuron, surrogate = jelly()
    cls = neuron.IFNode if kind == "if" else neuron.LIFNode
    kwargs = dict(v_threshold=threshold, v_reset=None, surrogate_function=surrogate.ATan(alpha=2.0), step_mode="m")
    if kind == "lif":
        kwargs |= dict(tau=tau, decay_input=False)
    if backend is not None:
        kwargs["backend"] = backend
    return cls(**kwargs)


def jelly_backends(device: str) -> list[str | None]:
    """The torch backend everywhere; the fused CUDA backends where this SpikingJelly version offers them."""
    neuron, _ = jelly()
    if device.startswith("cuda") and "backend" in inspect.signature(neuron.IFNode.__init__).parameters:
        return [None, "cupy"]
    return [None]


def neuron_rows(device: str, shape: tuple[int, ...], repeats: int) -> list[dict]:
    x = torch.randn(*shape, device=device)
    ours = {"IF": IFNeuron(1.0), "LIF": LIFNeuron(1.0, tau=2.0),
            "signed IF (conversion)": IFNeuron(1.0, neg_threshold=0.5, signed=True, v_init=0.5)}
    models = {f"sdm {name}": m.to(device) for name, m in ours.items()}
    if jelly():
        for backend in jelly_backends(device):
            for kind in ("if", "lif"):
                models[f"SpikingJelly {kind.upper()}Node ({backend or 'torch'})"] = jelly_node(kind, backend=backend).to(device)

    def inference(m):
        def run():
            m.reset()
            with torch.no_grad():
                m(x)
        return run

    def training(m):
        grad_x = x.clone().requires_grad_()

        def run():
            m.reset()
            m(grad_x).sum().backward()
        return run

    rows = []
    for name, m in models.items():
        row = {"neuron": name, "inference (ms)": round(timed(inference(m), repeats, device) * 1e3, 2),
               "inference, torch.compile (ms)": "", "forward + backward (ms)": round(timed(training(m), repeats, device) * 1e3, 2)}
        if isinstance(m, SpikingNeuron) and compiled_steps() is not None:
            compile_neurons(m)
            row["inference, torch.compile (ms)"] = round(timed(inference(m), repeats, device) * 1e3, 2)
        rows.append(row)
    return rows


def with_jelly_neurons(model: SpikingUNet) -> SpikingUNet:
    """The same UNet (same weights) with every neuron replaced by SpikingJelly's equivalent node."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpikingNeuron):
                kind = "lif" if isinstance(child, LIFNeuron) else "if"
                setattr(parent, name, jelly_node(kind, float(child.threshold), getattr(child, "tau", 2.0)))
    return model


def training_rows(device: str, batch: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    ours = SpikingUNet(**SPIKING_PRESETS["fmnist-small"], T=4, neuron="lif").to(device)
    models = {"sdm neurons": ours}
    if jelly():
        twin = SpikingUNet(**SPIKING_PRESETS["fmnist-small"], T=4, neuron="lif")
        twin.load_state_dict(ours.state_dict())
        models["SpikingJelly LIFNode (torch)"] = with_jelly_neurons(twin).to(device)
    x = torch.randn(batch, 1, 28, 28, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    rows, base = [], None
    for name, model in models.items():
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, optimiser=optimiser, jelly_neurons=name != "sdm neurons"):
            if jelly_neurons:
                from spikingjelly.activation_based import functional

                functional.reset_net(model)
            loss = model(x, t, return_dict=False)[0].pow(2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        seconds = timed(step, repeats, device)
        base = base or seconds
        rows.append({"direct-training step, fmnist-small, T = 4": name, "batch": batch, "seconds": round(seconds, 3),
                     "speed-up of sdm": "" if seconds == base else round(seconds / base, 2)})
    return rows


def sampling_rows(ann, observed, scheduler_config, device, num_images: int, steps: int) -> list[dict]:
    runs = [("ANN", ann)] + [(f"converted T={T} ({{}} executor)", convert(ann, observed.stats().retarget(T=T)).to(device)) for T in (4, 16)]
    rows, base = [], None
    for label, model in runs:
        seconds = timed(lambda model=model: sample(model, scheduler_config, num_images, steps=steps, progress=False),
                        1, device)
        base = base or seconds
        rows.append({"sampling": label.format(getattr(model, "executor", "")), "images": num_images,
                     "DDIM steps": steps, "seconds": round(seconds, 2), "ratio to ANN": round(seconds / base, 2)})
    return rows


def forward_rows(model, rows: int):
    """One forward pass over `rows` images at once (what an unchunked step executor runs per layer)."""
    size, channels = model.config.sample_size, model.config.in_channels
    device = next(model.parameters()).device
    x = torch.randn(rows, channels, size, size, device=device)
    t = torch.linspace(0, 999, rows, device=device).long()

    def run():
        with torch.no_grad():
            model(x, t)
    return run


def step_executor_rows(ann, observed, device, batch: int, repeats: int) -> list[dict]:
    """The step executor against T ANN forwards, beside the ANN itself run on T x batch rows in one call
    (what made an unchunked step executor's cost per step grow with T on CPUs)."""
    ann_seconds = timed(forward_rows(ann, batch), repeats, device)
    rows = []
    for T in (4, 8, 16):
        snn = convert(ann, observed.stats().retarget(T=T)).to(device)
        snn.set_executor("steps")
        seconds = timed(forward_rows(snn, batch), repeats, device)
        one_call = timed(forward_rows(ann, T * batch), 1, device)
        rows.append({"T": T, "batch": batch, "ANN forward (s)": round(ann_seconds, 4),
                     "step executor (s)": round(seconds, 4), "step / (T x ANN)": round(seconds / (T * ann_seconds), 2),
                     "ANN on T x batch rows in one call / (T x ANN)": round(one_call / (T * ann_seconds), 2)})
    return rows


@command(help="Executors, neurons and direct training timed side by side (ANN, converted, SpikingJelly).")
@click.option("--ckpt", default=None, help="[default: the embedded model]")
@click.option("--device", default="cpu", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--num-images", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images sampled per model (the `make demo` grid draws 16).")
@click.option("--sampling-steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--neuron-shape", default="4,64,128,16,16", show_default=True, help="[T, B, C, H, W] for the neurons.")
@click.option("--train-batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/execution_speed", show_default=True)
def main(ckpt, device, repeats, num_images, sampling_steps, batch_size, neuron_shape, train_batch, out):
    meta = provenance(__spec__.name)
    loaded = load_model(ckpt, device=device)
    ann, config = loaded.model, loaded.scheduler_config
    # The rate code of section 6's tables (T = 16 included); the weighted code runs the same graph.
    observed = calibrate(prepare(ann, ConversionConfig(coding="rate")), calibration_pairs(ann, config, 64), progress=False)
    shape = tuple(int(s) for s in neuron_shape.split(","))
    tables = {
        "sampling": sampling_rows(ann, observed, config, device, num_images, sampling_steps),
        "step executor": step_executor_rows(ann, observed, device, batch_size, repeats),
        "neurons": neuron_rows(device, shape, repeats),
        "direct training": training_rows(device, train_batch, repeats),
    }
    missing = "" if jelly() else " SpikingJelly is not installed: its rows are missing (`pip install -e '.[bench]'`)."
    text = "\n\n".join(markdown_table(rows, list(rows[0])) for rows in tables.values())
    text += (f"\n\nNeurons on a [{', '.join(map(str, shape))}] tensor; medians of {repeats} runs after a warm-up.{missing}"
             f"\n`{meta['command']}` on {meta['machine']}, {meta['date']}\n")
    write_json({**meta, **tables, "ckpt": loaded.source}, Path(out) / "results.json")
    write_text(text, Path(out) / "table.md")
    click.echo(text)


if __name__ == "__main__":
    main()
