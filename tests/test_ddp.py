"""torchrun on the CPU (gloo): two processes train in step and only rank 0 writes the run folder."""
import json
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import train
from model import build_model
from utils import load_checkpoint

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


def test_two_processes_end_with_identical_weights_and_only_rank_0_writes(photo_dir, tmp_path, tiny_argv, repo,
                                                                          child_env):
    out, cache = tmp_path / "run", tmp_path / "cache"
    # A shared cache folder: rank 0 must write it before rank 1 reads it.
    args = tiny_argv(photo_dir, out, "--device", "cpu", "--batch-size", "2", "--max-steps", "7",
                     "--warmup-steps", "1", "--cache", "--cache-dir", cache, "--debug-rank-dump")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(repo / "train.py"), *args], cwd=repo, env=child_env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("2 process(es) on cpu") == 1  # logs come from rank 0 only

    dumps = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert dumps[0]["step"] == dumps[1]["step"] == 7
    assert dumps[0]["sha256"] == dumps[1]["sha256"], "the processes ended with different models"
    ckpt = load_checkpoint(str(out / "last.pt"))
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"], strict=True)
    assert train.state_checksum(model) == dumps[0]["sha256"]  # and it is the model rank 0 saved
    assert not [k for k in ckpt["model"] if k.startswith("module.")]

    written = sorted(p.name for p in out.iterdir())
    assert written == ["best.pt", "config.json", "last.pt", "loss_curve.png", "metrics.jsonl", "rank0.json",
                       "rank1.json", "samples"]
    with open(out / "metrics.jsonl") as f:
        steps = [json.loads(x)["step"] for x in f]
    assert steps == sorted(set(steps)) and steps[-1] == 7  # one line per validation, not one per process
    # 23 training images over 2 processes of 2 images a step: 5 steps an epoch; samples at 1.0 and 1.4.
    assert len(list((out / "samples").iterdir())) == len(steps) == 2
    assert len(list(cache.glob("*.npy"))) == 2 and not list(cache.glob(".tmp_*"))
    assert ckpt["step"] == 7 and torch.isfinite(ckpt["model"]["head.weight"]).all()
