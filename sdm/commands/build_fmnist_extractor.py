"""Train the FID-FMNIST extractor and write its weights, card and reference statistics.

    python -m sdm.commands.build_fmnist_extractor --data ../shared/data/fashion_mnist.npz

Trains on the training split only; the test split gives the reported accuracy and the reference
statistics that FID-FMNIST compares samples against.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import date
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from sdm.commands.options import command
from sdm.diffusion.data import load_dataset
from sdm.io import atomic_file, write_text
from sdm.metrics.fmnist_extractor import (
    ASSET_DIR,
    FEATURE_DIM,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    FashionClassifier,
    extract_features,
)
from sdm.metrics.frechet import feature_statistics


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and horizontal flips."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
    x = padded[:, :, dy : dy + 28, dx : dx + 28]
    flip = (torch.rand(n, generator=generator) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def train_classifier(train_x, train_y, epochs: int, batch_size: int, lr: float, seed: int) -> FashionClassifier:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = FashionClassifier().train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * (len(train_x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="train extractor", unit="step")
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(len(train_x) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = _augment(train_x[idx].float() / 127.5 - 1.0, generator)
            loss = F.cross_entropy(net(x), train_y[idx], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


@torch.no_grad()
def accuracy(net: FashionClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = torch.cat([net(x[i : i + 1000].float() / 127.5 - 1.0) for i in range(0, len(x), 1000)])
    return (logits.argmax(1) == y).float().mean().item()


@command(help="Train the FID-FMNIST feature extractor and write it into the package's assets.")
@click.option("--data", required=True, help="Fashion-MNIST .npz with x_train, y_train, x_test, y_test.")
@click.option("--out", type=click.Path(file_okay=False), default=str(ASSET_DIR), show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(data, out, epochs, batch_size, lr, seed):
    started = time.time()
    labels = np.load(data)
    train_x = load_dataset(data, 28, 1, split="train")
    test_x = load_dataset(data, 28, 1, split="test")
    train_y = torch.from_numpy(labels["y_train"].astype(np.int64))
    test_y = torch.from_numpy(labels["y_test"].astype(np.int64))
    net = train_classifier(train_x, train_y, epochs, batch_size, lr, seed)
    test_accuracy = accuracy(net, test_x, test_y)
    mu, sigma = feature_statistics(extract_features(test_x.permute(0, 2, 3, 1).numpy(), net))
    info = {"reference": "Fashion-MNIST test split", "n": len(test_x), "feature_dim": FEATURE_DIM}
    out = Path(out)
    with atomic_file(out / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    with atomic_file(out / REFERENCE_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, info=np.array(json.dumps(info)))
    minutes = (time.time() - started) / 60
    command_line = (f"python -m sdm.commands.build_fmnist_extractor --data {data} --epochs {epochs} "
                    f"--batch-size {batch_size} --lr {lr} --seed {seed}")
    write_text(
        f"""# FID-FMNIST feature extractor

A small CNN classifier of Fashion-MNIST whose 256-d global-average-pool features stand in for
Inception's when computing a Fréchet distance offline. **FID-FMNIST is not comparable with any
paper's Inception FID**; use it to rank models on 28 x 28 grey images.

| | |
|---|---|
| architecture | 6 x (conv3x3-BN-ReLU), max-pool after the 2nd and 4th, global average pool (256-d features), dropout 0.3, linear 10 |
| training data | Fashion-MNIST training split (60,000), random 2-px shifts and horizontal flips |
| schedule | {epochs} epochs, batch {batch_size}, AdamW one-cycle max lr {lr}, label smoothing 0.05, seed {seed} |
| **test accuracy** | **{test_accuracy * 100:.2f}%** (Fashion-MNIST test split, 10,000 images) |
| reference statistics | `{REFERENCE_FILE}`: mean and covariance of the test split's features |
| command | `{command_line}` |
| hardware, time | {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads, {minutes:.1f} min, {date.today()} |
""",
        out / "MODEL_CARD.md",
    )
    click.echo(f"test accuracy {test_accuracy * 100:.2f}%; wrote {out}")


if __name__ == "__main__":
    main()
