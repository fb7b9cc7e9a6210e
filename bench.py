"""Throughput benchmark: python bench.py [--data DIR] [--device cpu|cuda] [--crop-size 128] [--out FILE] ...

Images per second of
  (a) data:     the training data path alone, exactly as train.py runs it: train.Batches over the in-memory
                cache (batch gather, random crop + flip; on a GPU the cache is in GPU memory), then the
                batched Lab conversion and normalisation (LabNorm.split), up to the model's input and
                target tensors;
  (b) step:     the model's forward + backward + AdamW step alone, on one fixed batch made once by (a);
  (c) train:    end-to-end training steps, (a) feeding (b), as train.py's loop does them;
  (d) original: for reference, the original project's data path: a Dataset that reads each file with
                skimage.io.imread, crops and flips it with numpy and calls skimage.color.rgb2lab, iterated
                by a DataLoader with 0 workers (one process), on the same images at the same crop size.

The four are timed in interleaved rounds (a b c d, a b c d, ...) after a warm-up, so that a load that
changes during the run (another job on the machine) weighs on all of them alike; each figure is the median
over the rounds, and the ratios compare figures of the same run. The JSON written to --out holds every
round, the machine (CPU, cores, GPU, torch version) and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np
import skimage
import torch
from skimage import color, io

from dataset import DataError, find_images
from train import (LOSSES, Batches, Criterion, Dist, TrainConfig, lr_at, model_inputs, new_model,
                   train_step)
from utils import write_atomic

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = "../shared/data/train"  # relative to the repository root
TARGETS = {"data_over_step": 5.0, "data_over_original": 2.0, "train_over_step": 0.9}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="folder of colour photos (default: relative to the repo root)")
    p.add_argument("--images", type=int, default=512, help="use this many images, spread evenly over the sorted list (0: all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--crop-size", type=int, default=128, help="side of the random training crop")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--width", type=int, default=32, help="model: channels of the first level")
    p.add_argument("--depth", type=int, default=4, help="model: number of downsamplings")
    p.add_argument("--loss", default="mse", choices=LOSSES, help="training loss (and head)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA, as train.py")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default, as train.py)")
    p.add_argument("--seconds", type=float, default=2.0, help="aim for this long per path in each round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; figures are medians over them")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per path before the rounds")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else was running)")
    p.add_argument("--out", default="", help="JSON file (default: bench/results/<device>-<cores>core.json "
                                             "or bench/results/cuda-<gpu>.json)")
    args = p.parse_args(argv)
    if args.data == DEFAULT_DATA:
        args.data = os.path.normpath(os.path.join(ROOT, DEFAULT_DATA))
    return args


def subset(paths: list[str], n: int) -> list[str]:
    """n paths spread evenly over the sorted list (so every subfolder is represented), or all of them."""
    if n <= 0 or n >= len(paths):
        return paths
    return [paths[i * len(paths) // n] for i in range(n)]


# ---------------------------------------------------------------------------------------------------
class OriginalPathDataset(torch.utils.data.Dataset):
    """The original project's data path, for reference: per image, skimage.io.imread, a random crop and
    horizontal flip in numpy, skimage.color.rgb2lab (float64) -> (L (1,c,c), ab (2,c,c)) float32 tensors,
    normalised like LabNorm. Images smaller than the crop are reflect-padded (none are, in the shared data).
    """

    def __init__(self, paths: list[str], crop: int, norm, seed: int = 0):
        self.paths, self.crop, self.norm = paths, crop, norm
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = io.imread(self.paths[i])
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img, c = img[..., :3], self.crop
        h, w = img.shape[:2]
        if min(h, w) < c:
            img = np.pad(img, ((0, max(0, c - h)), (0, max(0, c - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y, x = self.rng.integers(0, h - c + 1), self.rng.integers(0, w - c + 1)
        img = img[y:y + c, x:x + c]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        lab = color.rgb2lab(img).astype(np.float32).transpose(2, 0, 1)
        L = (torch.from_numpy(lab[:1].copy()) - self.norm.l_center) / self.norm.l_scale
        ab = torch.from_numpy(lab[1:].copy()) / self.norm.ab_scale
        return L, ab


def forever(make_iter):
    """Endless stream of batches: make_iter(epoch) for epoch 0, 1, 2, ..."""
    epoch = 0
    while True:
        yield from make_iter(epoch)
        epoch += 1


# ---------------------------------------------------------------------------------------------------
def setup(args):
    """Everything train.py would build for these settings; returns the four timed callables (each runs one
    batch and returns its number of images) and facts for the report."""
    cfg = TrainConfig(data=args.data, crop_size=args.crop_size, batch_size=args.batch_size, width=args.width,
                      depth=args.depth, loss=args.loss, amp=args.amp, device=args.device, threads=args.threads,
                      cache=True, cache_dir="", workers=0, progress=False)
    d = Dist(cfg.device)
    cuda = d.device.type == "cuda"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    paths = subset(find_images(cfg.data), args.images)
    t0 = time.perf_counter()
    batches = Batches(cfg, paths, d, train=True)  # decodes the images once into the uint8 cache
    cache_s = time.perf_counter() - t0
    if batches.n < cfg.batch_size:
        raise DataError(f"{cfg.data}: {batches.n} readable images, fewer than one batch of {cfg.batch_size}")

    model = new_model(cfg, batches).to(d.device)
    mcfg = model.cfg
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    crit = Criterion(cfg.loss, model, cfg.mse_weight)
    model = model.to(memory_format=torch.channels_last)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and cuda)
    norm = mcfg.norm
    horizon = 10 ** 6
    state = {"step": 0, "loss": torch.zeros((), device=d.device)}

    def step(l_n, ab_n):
        state["loss"] += train_step(model, opt, crit, l_n, ab_n, lr_at(state["step"], horizon, cfg), amp)
        state["step"] += 1

    def to_inputs(rgb):
        return model_inputs(norm, rgb)

    data_stream = forever(batches.epoch)
    train_stream = forever(batches.epoch)
    fixed = to_inputs(next(forever(batches.epoch)))
    original = torch.utils.data.DataLoader(
        OriginalPathDataset(batches.cache.paths, cfg.crop_size, norm, cfg.seed), batch_size=cfg.batch_size,
        shuffle=True, num_workers=0, drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
    original_stream = forever(lambda e: iter(original))

    def run_data():
        rgb = next(data_stream)
        to_inputs(rgb)
        return len(rgb)

    def run_step():
        step(*fixed)
        return len(fixed[0])

    def run_train():
        rgb = next(train_stream)
        step(*to_inputs(rgb))
        return len(rgb)

    def run_original():
        L, ab = next(original_stream)
        L, ab = L.to(d.device, non_blocking=True), ab.to(d.device, non_blocking=True)
        return len(L)

    paths_ = {"data": run_data, "step": run_step, "train": run_train, "original": run_original}
    facts = {"images": batches.n, "cache_build_s": round(cache_s, 2),
             "cache_shape": list(batches.images.shape), "num_bins": mcfg.num_bins,
             "params": sum(p.numel() for p in model.parameters())}
    return paths_, d.device, facts


def timed(fn, batches: int, device: torch.device) -> tuple[float, float, int]:
    """Run fn `batches` times -> (seconds, process CPU seconds, images). On CUDA: events, synchronised."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    c0, t0 = time.process_time(), time.perf_counter()
    n = sum(fn() for _ in range(batches))
    if cuda:
        end.record()
        end.synchronize()
        wall = start.elapsed_time(end) / 1e3
    else:
        wall = time.perf_counter() - t0
    return wall, time.process_time() - c0, n


def measure(paths: dict, device: torch.device, args) -> dict:
    """Warm up each path, size its rounds to about args.seconds, then time interleaved rounds."""
    per_round = {}
    for name, fn in paths.items():
        timed(fn, max(0, args.warmup - 1), device)
        wall, _, _ = timed(fn, 1, device)  # the last warm-up batch sizes the rounds
        per_round[name] = max(1, round(args.seconds / max(wall, 1e-6)))
    rounds = {name: [] for name in paths}
    for r in range(args.repeats):
        for name, fn in paths.items():
            wall, cpu, n = timed(fn, per_round[name], device)
            rounds[name].append({"images_per_s": n / wall, "seconds": wall, "cpu_seconds": cpu, "images": n})
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {v[-1]['images_per_s']:.1f}" for k, v in rounds.items()) + " images/s", flush=True)
    out = {}
    for name, rs in rounds.items():
        ips = [x["images_per_s"] for x in rs]
        out[name] = {"images_per_s": statistics.median(ips), "min": min(ips), "max": max(ips),
                     "cpu_seconds_per_image": statistics.median(x["cpu_seconds"] / x["images"] for x in rs),
                     "batches_per_round": per_round[name], "rounds": rs}
    return out


# ---------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "skimage": skimage.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def default_out(device: torch.device) -> str:
    if device.type == "cuda":
        gpu = "".join(ch if ch.isalnum() else "-" for ch in torch.cuda.get_device_name(device).lower())
        return os.path.join(ROOT, "bench", "results", f"cuda-{gpu.strip('-')}.json")
    return os.path.join(ROOT, "bench", "results", f"cpu-{os.cpu_count()}core.json")


def write_json(obj: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def report(res: dict, ratios: dict, dev: torch.device) -> str:
    labels = {"data": "(a) data path (train.Batches + LabNorm.split)", "step": "(b) model step (fwd+bwd+AdamW)",
              "train": "(c) end-to-end training", "original": "(d) original path (imread+rgb2lab, 0 workers)"}
    lines = [f"{'path':50s} {'images/s':>10s} {'min..max over rounds':>22s}"]
    for k, label in labels.items():
        r = res[k]
        lines.append(f"{label:50s} {r['images_per_s']:10.1f} {r['min']:10.1f}..{r['max']:<10.1f}")
    goals = {"data_over_step": "data / step (training consumption)",
             "data_over_original": "data / original path",
             "train_over_step": "end-to-end / model-only"}
    for k, label in goals.items():
        target = f">= {TARGETS[k]:.2g}" + ("x" if k != "train_over_step" else " (GPU target)")
        ok = "" if k == "train_over_step" and dev.type != "cuda" else ("  ok" if ratios[k] >= TARGETS[k] else "  MISSED")
        lines.append(f"{label:50s} {ratios[k]:10.2f}   target {target}{ok}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    load_before = list(os.getloadavg())
    try:
        paths, dev, facts = setup(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{facts['images']} images cached in {facts['cache_build_s']} s; device {dev}, "
          f"{torch.get_num_threads()} torch thread(s), load average {load_before[0]:.2f}", flush=True)
    res = measure(paths, dev, args)
    ratios = {"data_over_step": res["data"]["images_per_s"] / res["step"]["images_per_s"],
              "data_over_original": res["data"]["images_per_s"] / res["original"]["images_per_s"],
              "train_over_step": res["train"]["images_per_s"] / res["step"]["images_per_s"]}
    out = {"command": "python " + " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
           "config": {k: v for k, v in vars(args).items()}, "facts": facts,
           "machine": {**machine(dev), "load_avg_before": load_before, "load_avg_after": list(os.getloadavg())},
           "note": args.note, "results": res, "ratios": ratios, "targets": TARGETS,
           "definitions": {"images_per_s": "median over rounds of images / seconds of one round",
                           "original": "one process (DataLoader num_workers=0); the data path also runs in one "
                                       "process, with torch's intra-op threads (machine.torch_threads)",
                           "cpu_seconds_per_image": "process CPU time (all threads) per image; less sensitive "
                                                    "than images/s to other jobs on the machine"}}
    path = args.out or default_out(dev)
    write_json(out, path)
    print(report(res, ratios, dev))
    print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
