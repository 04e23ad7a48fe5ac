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
