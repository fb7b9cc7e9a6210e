"""Bring a training run back from a GPU machine: slim (float16, no optimizer) copies of its checkpoints and
its logs, small enough to copy back (at most 64 MiB came back from the H200 machine of 2026-11-30).

    python -m experiments.collect_run RUN_DIR RESULTS_DIR [best.pt last.pt ...]
"""
import os
import shutil
import sys

from utils import half_precision, load_checkpoint, save_checkpoint


def collect(run: str, results: str, names: list[str]) -> list[str]:
    os.makedirs(results, exist_ok=True)
    for name in names:
        path = os.path.join(run, name)
        if not os.path.exists(path):
            print(f"{path}: not written", file=sys.stderr)
            continue
        ck = load_checkpoint(path)
        ck.pop("optimizer", None)
        ck["model"] = half_precision(ck["model"])
        save_checkpoint(ck, os.path.join(results, name.replace(".pt", "_fp16.pt")))
    for name in ("metrics.jsonl", "config.json", "loss_curve.png"):
        if os.path.exists(os.path.join(run, name)):
            shutil.copy(os.path.join(run, name), results)
    samples = sorted(os.listdir(os.path.join(run, "samples"))) if os.path.isdir(os.path.join(run, "samples")) else []
    if samples:
        shutil.copy(os.path.join(run, "samples", samples[-1]), os.path.join(results, "samples_last.png"))
    return sorted(os.listdir(results))


if __name__ == "__main__":
    run_dir, results_dir, *keep = sys.argv[1:]
    print("results:", collect(run_dir, results_dir, keep or ["best.pt"]))
