"""Two CPU processes through torchrun: data-parallel training and sharded evaluation."""

import json
import os
import socket
import subprocess
import sys

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m"]
    proc = subprocess.run(launch + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_data_parallel_training(fake_fmnist, tmp_path):
    proc = _launch(["sdm.commands.train", "--data", fake_fmnist, "--out", tmp_path / "run", "--preset", "tiny",
                    "--steps", 2, "--batch-size", 4, "--device", "cpu"], tmp_path)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 2
    assert proc.stdout.count("trained 2 steps") == 1  # the main process reports, once


def test_sharded_evaluation_on_two_ranks(tiny_pipeline, tmp_path):
    _launch(["sdm.commands.evaluate", "--ckpt", tiny_pipeline, "--num-samples", 6, "--shard-size", 2, "--steps", 2,
             "--metrics", "is", "--extractor", "fmnist", "--work-dir", tmp_path / "work", "--out", tmp_path / "r.json",
             "--device", "cpu"],
            tmp_path)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["processes"] == 2 and report["results"][0]["n"] == 6
    seeds = np.concatenate([np.load(tmp_path / "work" / f"shard_{k:05d}.npz")["seeds"] for k in range(3)])
    assert seeds.tolist() == list(range(6))


def test_finetuning_under_accelerate_launch_keeps_the_ranks_identical(tmp_path):
    """`sdm-finetune` on two CPU processes (accelerate launch): every checkpoint gathers each process's
    weight digest (and stops the run if they differ); both are recorded, and they are equal."""
    import torch

    from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
    from convert import convert
    from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE, save_pipeline
    from sdm.models.presets import build_unet

    torch.manual_seed(3)
    unet = build_unet("tiny").eval()
    save_pipeline(unet, DDPM_LINEAR_SCHEDULE, tmp_path / "ann")
    snn = convert(calibrate(prepare(unet, ConversionConfig(T=2)), calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 16),
                            progress=False))
    snn.source["ckpt"] = str(tmp_path / "ann")
    snn.save_pretrained(tmp_path / "snn", scheduler_config=DDPM_LINEAR_SCHEDULE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
              "-m", "convert.commands.finetune", "--snn", str(tmp_path / "snn"), "--steps", "4", "--batch-size", "4",
              "--feature-weight", "1", "--num-samples", "0", "--out", str(tmp_path / "run")]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and len(state["weight_digests"]) == 2
    assert state["weight_digests"][0] == state["weight_digests"][1]
    assert proc.stdout.count("fine-tuned") == 1  # the main process reports, once
