"""Train the colorizer: python train.py [--data DIR] [--val DIR] [--out RUN_DIR] [--resume CKPT] ...

One code path for the CPU, one GPU and torchrun (DDP is detected from the RANK environment variable).
Each run folder gets config.json, metrics.jsonl (one line per epoch), loss_curve.png, samples/epoch_NNN.png
(grey | predicted | truth of a fixed validation batch; step_NNNNNNN.png when a run stops mid-epoch),
and checkpoints last.pt and best.pt.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dataset import (ColorDataset, DataError, ImageCache, center_crop, find_images, random_crop_flip,
                     random_resized_crop_flip,
                     split_holdout)
from backbones import PretrainedWeightsMissing, pretrained_state_dict
from hints import simulate_hints
from model import ENCODERS, LOG_VAR_MAX, LOG_VAR_MIN, Decode, ModelConfig, build_model
from utils import (AB_GRID_N, CheckpointError, ab_grid_index, float_weights, grid_centers, load_checkpoint,
                   prior_from_counts, prior_from_weights, rebalance_weights, remove_temporaries_on_signals,
                   save_checkpoint, seed_everything, soft_encode)

LOSSES = ("mse", "l1", "huber", "classification", "mse_var")
POSTERIOR_MEAN = Decode(temperature=1.0)  # a classification head's plain mean colour (T 1, no prior correction)


@dataclass
class TrainConfig:
    data: str = field(default="data/train", metadata={"help": "folder of colour photos (searched recursively)"})
    val: str = field(default="", metadata={"help": "validation folder; default: hold out --val-fraction of --data"})
    val_fraction: float = field(default=0.05, metadata={"help": "share of --data held out when --val is not given"})
    exclude: str = field(default="", metadata={"help": "text file of photos never to train on, one path per line relative to --data (e.g. a held-out selection set: experiments/holdout.py)"})
    out: str = field(default="runs/default", metadata={"help": "run folder (config, metrics, samples, checkpoints)"})
    resume: str = field(default="", metadata={"help": "checkpoint to continue from (model, optimizer, counters)"})
    init: str = field(default="", metadata={"help": "start from these weights, with fresh optimizer and counters"})
    epochs: int = field(default=20, metadata={"help": "passes over the training images"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (0: no limit); the lr schedule still spans --epochs"})
    batch_size: int = field(default=32, metadata={"help": "images per step (per process under torchrun)"})
    crop_size: int = field(default=128, metadata={"help": "side of the random training crop"})
    resize: int = field(default=0, metadata={"help": "short side images are resized to before cropping (0: 1.25 x crop)"})
    scale_min: float = field(default=0.0, metadata={"help": "scale augmentation: crop a random window of side U(scale_min, 1) x --resize and resample it to --crop-size (0: plain crops of --crop-size; needs the cache)"})
    lr: float = field(default=2e-3, metadata={"help": "peak Adam learning rate (cosine decay after warm-up)"})
    warmup_steps: int = field(default=200, metadata={"help": "linear learning-rate warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam(W) weight decay"})
    loss: str = field(default="mse", metadata={"help": "mse | l1 | huber | classification | mse_var (mse, and a branch that predicts the error's variance)", "choices": LOSSES})
    rebalance_lambda: float = field(default=0.5, metadata={"help": "classification: prior smoothing for class rebalancing (1 = none)"})
    prior_images: int = field(default=2000, metadata={"help": "classification: images used to estimate the ab prior"})
    mse_weight: float = field(default=0.0, metadata={"help": "classification: add this weight x the MSE of the predicted distribution's mean ab (normalised as the regression heads') against the target (0: the classification loss alone)"})
    encoder: str = field(default="unet", metadata={"help": "model: unet (learned from scratch) | efficientnet_lite0 | efficientnet_lite1 (ImageNet-pretrained; need requirements-train.txt)", "choices": ENCODERS})
    encoder_lr: float = field(default=0.1, metadata={"help": "pretrained encoder's learning rate as a multiple of --lr (0 freezes it)"})
    var_only: bool = field(default=False, metadata={"help": "mse_var: train only the variance branch, on the frozen network given by --init (an mse run's checkpoint): the branch learns that network's errors"})
    hints: bool = field(default=False, metadata={"help": "model: also take colour hints (user points); trained with simulated users"})
    hint_p_none: float = field(default=0.4, metadata={"help": "hints: share of training images given no hints at all"})
    width: int = field(default=32, metadata={"help": "model: channels of the first (decoder) level"})
    depth: int = field(default=4, metadata={"help": "model: number of downsamplings"})
    max_width: int = field(default=256, metadata={"help": "model: channel cap"})
    workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "processes for decoding images"})
    cache: bool = field(default=True, metadata={"help": "decode every image once into memory (--no-cache streams from disk)"})
    cache_dir: str = field(default=".cache", metadata={"help": "where the decoded-image cache is kept between runs ('' = memory only)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    amp: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on the CPU)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    seed: int = field(default=0, metadata={"help": "random seed (split, init, crops)"})
    val_every: int = field(default=1, metadata={"help": "validate, plot, save samples and last.pt/best.pt every N epochs (and after the last)"})
    checkpoint_every: int = field(default=500, metadata={"help": "also write last.pt every N steps (0: only per epoch)"})
    sample_images: int = field(default=8, metadata={"help": "validation images in each sample grid"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)"})
    progress: bool = field(default=True, metadata={"help": "show tqdm progress bars"})
    # Hidden (tests): every process writes OUT/rank{r}.json, a checksum of its final weights, so that a
    # test can check that the processes of a torchrun job end with identical models.
    debug_rank_dump: bool = field(default=False, metadata={"help": argparse.SUPPRESS})


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            typ = {"int": int, "float": float, "str": str}[f.type]
            p.add_argument(flag, type=typ, default=f.default, help=f.metadata["help"],
                           choices=f.metadata.get("choices"))
    cfg = TrainConfig(**vars(p.parse_args(argv)))
    if not 0 <= cfg.scale_min <= 1:
        p.error("--scale-min must lie in [0, 1]")
    if cfg.scale_min and not cfg.cache:
        p.error("--scale-min needs the image cache (drop --no-cache)")
    if cfg.val_every < 1:
        p.error("--val-every must be at least 1")
    if cfg.encoder_lr < 0:
        p.error("--encoder-lr must be at least 0")
    if cfg.mse_weight < 0 or (cfg.mse_weight and cfg.loss != "classification"):
        p.error("--mse-weight must be at least 0, and needs --loss classification")
    if cfg.var_only and (cfg.loss != "mse_var" or not (cfg.init or cfg.resume)):
        p.error("--var-only needs --loss mse_var and a network to freeze (--init, or --resume of such a run)")
    return cfg


# ---------------------------------------------------------------------------------------------------
class Dist:
    """Process-group facts. One process (no RANK in the environment) is the world of size 1."""

    def __init__(self, device_arg: str):
        self.enabled = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", 0)) if self.enabled else 0
        self.world = int(os.environ.get("WORLD_SIZE", 1)) if self.enabled else 1
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        if device_arg == "cuda" and self.enabled:
            device_arg = f"cuda:{local}"
        self.device = torch.device(device_arg)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # set_device needs an index
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.enabled:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over processes (identity for one process)."""
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
            t /= self.world
        return t

    def union(self, flags: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over processes (e.g. which files any process found unreadable)."""
        if self.enabled:
            flags = flags.float().clone()
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def sync_buffers(self, model: torch.nn.Module):
        """Give every process rank 0's buffers (BatchNorm statistics, which each rank updates from its own
        batches), so that all processes validate, and end with, the model that rank 0 saves."""
        if self.enabled:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def log(d: Dist, *a):
    if d.main:
        print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------
class Batches:
    """Yields uint8 RGB training batches (B, 3, c, c) on the device, from the cache or from files.

    The order of epoch e is a permutation seeded by (seed, e), sharded across processes, so a resumed
    run can skip straight to the batch it stopped at.
    """

    def __init__(self, cfg: TrainConfig, paths: list[str], d: Dist, train: bool):
        self.cfg, self.d, self.train = cfg, d, train
        self.resize = cfg.resize or round(cfg.crop_size * 1.25)
        what = "training" if train else "validation"
        if cfg.cache:
            # Under torchrun with a cache folder, rank 0 writes the cache and the others then read it.
            shared = d.enabled and bool(cfg.cache_dir)
            if shared and not d.main:
                d.barrier()
            self.cache = ImageCache.build(paths, self.resize, workers=cfg.workers,
                                          cache_dir=cfg.cache_dir or None,
                                          progress=cfg.progress and d.main, what=what, report=d.main)
            if shared and d.main:
                d.barrier()
            # A reused cache is a read-only memory map: copy it into (writable) memory. On a GPU the
            # whole cache lives on the device (9,900 images at 144 px are 0.6 GB), so that a batch is
            # one gather kernel with no host->device copy.
            self.images = torch.from_numpy(np.require(self.cache.images, np.uint8, ["C", "W"]))
            if d.device.type == "cuda":
                self.images = self.images.to(d.device)
            self.n = len(self.images)
        else:
            self.ds = ColorDataset(paths, cfg.crop_size, train, resize=self.resize, lab=False, what=what,
                                   report=d.main)
            self.n = len(self.ds)

    def skipped(self) -> int:
        """Unreadable files left out so far, by any process (a collective call under torchrun)."""
        if self.cfg.cache:
            return len(self.cache.skipped)
        return len(self.ds.bad) + int(self.d.union(self.ds.failed).sum())

    def steps_per_epoch(self) -> int:
        """Training: the same whole number of batches on every process (DDP needs equal step counts).
        Validation: enough batches for every image of this process's share, which may differ by one
        image between processes (validation has no collective until its final sum)."""
        if self.train:
            return max(1, self.n // self.d.world // self.cfg.batch_size)
        return math.ceil(len(range(self.d.rank, self.n, self.d.world)) / self.cfg.batch_size)

    def epoch(self, epoch: int, skip: int = 0):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=g) if self.train else torch.arange(self.n)
        order = order[self.d.rank::self.d.world]
        steps, bs = self.steps_per_epoch(), self.cfg.batch_size
        if not self.cfg.cache:
            from torch.utils.data import DataLoader
            idx = order[skip * bs: steps * bs].tolist()
            loader = DataLoader(torch.utils.data.Subset(self.ds, idx), batch_size=bs, shuffle=False,
                                num_workers=self.cfg.workers, pin_memory=self.d.device.type == "cuda",
                                persistent_workers=False, drop_last=False)  # idx is whole batches
            for batch in loader:
                yield batch.to(self.d.device, non_blocking=True)
            return
        for s in range(skip, steps):
            idx = order[s * bs:(s + 1) * bs]
            batch = self.images[idx.to(self.images.device)]
            if self.train:
                gen = torch.Generator().manual_seed(self.cfg.seed * 7_919 + epoch * 100_003 + s)
                if self.cfg.scale_min:
                    yield random_resized_crop_flip(batch, self.cfg.crop_size, self.cfg.scale_min, gen)
                else:
                    yield random_crop_flip(batch, self.cfg.crop_size, gen)
            else:
                yield center_crop(batch, self.cfg.crop_size)


def estimate_prior(batches: Batches, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical ab distribution of the training images -> (kept bin centres (Q,2), smoothed prior (Q,))."""
    n = min(cfg.prior_images, batches.n)
    idx = torch.randperm(batches.n, generator=torch.Generator().manual_seed(cfg.seed))[:n]
    counts = torch.zeros(AB_GRID_N ** 2, dtype=torch.float64)
    norm = ModelConfig().norm
    for chunk in idx.split(256):
        if cfg.cache:
            rgb = center_crop(batches.images[chunk], cfg.crop_size)
        else:
            rgb = torch.stack([batches.ds[i] for i in chunk.tolist()])
        _, ab_n = norm.split(rgb)
        counts += torch.bincount(ab_grid_index(norm.ab_inv(ab_n)).flatten(), minlength=AB_GRID_N ** 2).double().cpu()
    keep, prior = prior_from_counts(counts.numpy())
    return grid_centers()[keep], torch.from_numpy(prior).float()


class Criterion:
    """Loss on the head's output (half resolution) against the target ab, averaged in float32. A
    classification loss may add `mse_weight` x the squared error of its distribution's mean (a mixed loss)."""

    def __init__(self, kind: str, model=None, mse_weight: float = 0.0):
        self.kind, self.mse_weight = kind, mse_weight
        if kind == "classification":
            bins = model.bins
            # Map every cell of the full grid to its nearest kept bin (soft_encode's fallback).
            d2 = ((grid_centers().to(bins.device)[:, None] - bins[None]) ** 2).sum(-1)
            self.grid_to_bin = d2.argmin(1)
            self.bins, self.weights = bins, model.log_weights.exp()
            self.ab_scale = model.cfg.ab_scale
            self.decode = model.decode

    def __call__(self, out: torch.Tensor, ab_n: torch.Tensor) -> torch.Tensor:
        target = F.avg_pool2d(ab_n, 2, ceil_mode=True)
        out = out.float()
        if self.kind == "mse":
            return F.mse_loss(out, target)
        if self.kind == "mse_var":  # the mean's MSE, and the Gaussian NLL of its (detached) error
            mean, log_var = out[:, :2], out[:, 2:4].clamp(LOG_VAR_MIN, LOG_VAR_MAX)
            err2 = (target - mean.detach()) ** 2
            return F.mse_loss(mean, target) + 0.5 * (log_var + err2 * torch.exp(-log_var)).mean()
        if self.kind == "l1":
            return F.l1_loss(out, target)
        if self.kind == "huber":
            return F.smooth_l1_loss(out, target, beta=0.1)
        idx, w = soft_encode(target * self.ab_scale, self.grid_to_bin, self.bins)
        logp = torch.log_softmax(out, dim=1).gather(1, idx)
        pixel_w = self.weights[idx.gather(1, w.argmax(1, keepdim=True))[:, 0]]  # weight of the dominant bin
        loss = (-(w * logp).sum(1) * pixel_w).mean()
        if self.mse_weight:
            loss = loss + self.mse_weight * F.mse_loss(self.decode(out, POSTERIOR_MEAN), target)
        return loss


# ---------------------------------------------------------------------------------------------------
def psnr_rgb(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of float RGB in [0, 1], quantised to 8 bits as a saved image would be."""
    p = (pred_rgb * 255).round()
    t = (true_rgb * 255).round()
    mse = ((p - t) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0 ** 2 / mse)


VAL_HINTS = 10  # a hint model is also validated with this many simulated points per image


@torch.no_grad()
def validate(model, val: Batches, crit: Criterion, d: Dist, norm) -> dict:
    """Validation loss and PSNR without hints (automatic colorization); a hint model also reports
    val_psnr_hints: the PSNR with VAL_HINTS simulated points per image (the same points every epoch)."""
    model.eval()
    tot = torch.zeros(4, device=d.device)  # loss sum, psnr sum, psnr-with-hints sum, count
    g = torch.Generator().manual_seed(12345)
    for rgb in val.epoch(0):
        l_n, ab_n = norm.split(rgb)
        out = model(l_n)
        pred = F.interpolate(model.decode(out), size=l_n.shape[-2:], mode="bilinear", align_corners=False)
        psnr_h = torch.zeros((), device=d.device)
        if model.cfg.hints:
            hints = simulate_hints(ab_n, g, points=VAL_HINTS)
            pred_h = model.predict_ab(l_n, hints)
            psnr_h = psnr_rgb(norm.merge(l_n, pred_h), rgb.float() / 255).sum()
        tot += torch.stack([crit(out, ab_n) * len(rgb), psnr_rgb(norm.merge(l_n, pred), rgb.float() / 255).sum(),
                            psnr_h, torch.tensor(float(len(rgb)), device=d.device)])
    tot = d.mean(tot)
    model.train()
    res = {"val_loss": (tot[0] / tot[3]).item(), "val_psnr": (tot[1] / tot[3]).item()}
    if model.cfg.hints:
        res["val_psnr_hints"] = (tot[2] / tot[3]).item()
    return res


@torch.no_grad()
def save_samples(model, rgb: torch.Tensor, norm, path: str) -> None:
    """PNG grid: one row per image, columns grey | predicted | truth."""
    from PIL import Image
    model.eval()
    l_n, _ = norm.split(rgb)
    pred = norm.merge(l_n, model.predict_ab(l_n))
    grey = norm.merge(l_n, torch.zeros_like(pred[:, :2]))
    model.train()
    rows = torch.cat([grey, pred, rgb.float() / 255], dim=3)  # (B, 3, c, 3c)
    grid = torch.cat(list(rows), dim=1)                       # (3, B*c, 3c)
    Image.fromarray((grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)).save(path)


def plot_curves(metrics: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [m["epoch"] for m in metrics]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    a1.plot(ep, [m["train_loss"] for m in metrics], label="train")
    a1.plot(ep, [m["val_loss"] for m in metrics], label="validation")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    a2.plot(ep, [m["val_psnr"] for m in metrics])
    a2.set_xlabel("epoch"), a2.set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def new_model(cfg: TrainConfig, batches: Batches, pretrained: bool = True, init: dict | None = None):
    """A freshly initialised model for cfg: a pretrained encoder gets its ImageNet weights (pretrained=True),
    a classification head its ab bins and rebalancing weights from the empirical colour prior of the
    training batches, or, fine-tuning from `init` (a classification checkpoint), that checkpoint's bins and
    prior: its head's classes stay the ones it was trained on, whatever the new crop size or data."""
    mcfg = ModelConfig(encoder=cfg.encoder, width=cfg.width, depth=cfg.depth, max_width=cfg.max_width,
                       head={"classification": "classification", "mse_var": "regression_var"}.get(cfg.loss, "regression"),
                       hints=cfg.hints)
    if mcfg.head == "classification":
        if init is not None and "ab_prior" in init:
            bins, prior = init["ab_prior"]["bins"].float(), init["ab_prior"]["prior"].float()
        else:
            bins, prior = estimate_prior(batches, cfg)
        mcfg.num_bins = len(bins)
    model = build_model(mcfg)
    if mcfg.encoder != "unet" and pretrained:
        model.encoder.load_state_dict(pretrained_state_dict(model.encoder, mcfg.encoder))
    if mcfg.head == "classification":
        model.bins.copy_(bins)
        model.log_weights.copy_(rebalance_weights(prior, cfg.rebalance_lambda).log())
        model.ab_prior = prior.float().cpu()  # kept for the checkpoints: --rebalance-lambda 1 erases it
    return model


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; a pretrained encoder trains at --encoder-lr times the decoder's rate (each group's lr_mult),
    or not at all (0: left out; train() freezes it, BatchNorm statistics included). A frozen mean
    (--var-only) leaves the variance branch as the only group."""
    if model.mean_frozen:
        return torch.optim.AdamW(model.var_head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if model.cfg.encoder == "unet":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr_mult": 1.0}]
    if cfg.encoder_lr > 0:
        groups.append({"params": enc, "lr_mult": cfg.encoder_lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def model_inputs(norm, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB batch on the device -> (normalised L, channels-last; normalised ab target).
    The Lab conversion runs batched on the device, in float32."""
    l_n, ab_n = norm.split(rgb)
    return l_n.contiguous(memory_format=torch.channels_last), ab_n


def train_step(net, opt, crit, l_n: torch.Tensor, ab_n: torch.Tensor, lr: float, amp,
               hints: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step; returns the loss (a device tensor: no host sync)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    with amp:
        out = net(l_n, hints)
    loss = crit(out, ab_n)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def state_checksum(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, in key order: equal only for bit-identical models."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_checkpoint(model, opt, cfg: TrainConfig, epoch: int, step_in_epoch: int, step: int,
                    best: float) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "model_config": model.cfg.to_dict(), "train_config": dataclasses.asdict(cfg),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step, "best_val_loss": best,
            **ab_prior_entry(model, cfg.rebalance_lambda)}


def load_init(model, ckpt: dict, path: str) -> None:
    """--init: the checkpoint's weights into model. Only a hint model's hint inputs may be missing (an
    automatic model fine-tuned into a hint model: they start at zero, so it starts as that model), and a
    variance branch (an mse network fine-tuned into mse_var: the branch starts fresh). The
    classification loss's rebalancing weights stay those new_model set from this run's --rebalance-lambda."""
    weights = {k: v for k, v in init_weights(ckpt).items() if k != "log_weights"}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith(("hint_in.", "var_head.")) and k != "log_weights"]
    if missing or unexpected:
        raise CheckpointError(f"{path}: its weights do not fit this model ("
                              f"{len(missing)} missing, {len(unexpected)} unexpected, e.g. "
                              f"{(missing + unexpected)[0]}); match --encoder, --width, --depth and --loss")


def init_weights(ckpt: dict) -> dict:
    """The float32 weights of one network from any checkpoint: a training one, or a shipped one (float16 or
    int8, or an ensemble, whose first member, the run's best checkpoint, is the one taken)."""
    sd = float_weights(ckpt["model"])
    if ckpt.get("members", 1) > 1:
        sd = {k[len("members.0."):]: v for k, v in sd.items() if k.startswith("members.0.")}
    return sd


def ab_prior_entry(model, lam: float) -> dict:
    """Classification checkpoints also carry the empirical ab prior (over model.bins) and its lambda: the
    one new_model (or the checkpoint the model came from) set as model.ab_prior, else the one the
    rebalancing weights imply (which a lambda of 1, uniform weights, does not determine)."""
    if model.cfg.head != "classification":
        return {}
    prior = getattr(model, "ab_prior", None)
    if prior is None:
        prior = prior_from_weights(model.log_weights.detach().cpu(), lam)
    return {"ab_prior": {"bins": model.bins.detach().cpu(), "lambda": lam, "prior": prior}}


def without_excluded(paths: list[str], root: str, exclude_file: str) -> list[str]:
    """paths minus the photos listed in exclude_file (one per line, relative to root; blank lines and
    lines starting with # ignored). Every listed photo must be among paths, so that a list made for
    another folder fails loudly instead of excluding nothing."""
    if not exclude_file:
        return paths
    with open(exclude_file) as f:
        listed = {os.path.normpath(line.strip()) for line in f if line.strip() and not line.startswith("#")}
    rel = {p: os.path.normpath(os.path.relpath(p, root)) for p in paths}
    missing = listed - set(rel.values())
    if missing:
        raise DataError(f"{exclude_file}: {len(missing)} listed photo(s) are not under {root}, "
                        f"e.g. {sorted(missing)[0]}")
    return [p for p in paths if rel[p] not in listed]


# ---------------------------------------------------------------------------------------------------
# The run, split as DiT and MAE split theirs: setup() does everything before the first step,
# train_one_epoch() the steps of one epoch, end_window() the validation, metrics and checkpoints after
# each --val-every window, finish() the summary; train() is the loop over epochs that joins them.

class Window:
    """The training since the last validation: when it began, the images it saw (all processes), and
    the sum and count of its step losses (the sum stays on the device: no host sync per step)."""

    def __init__(self, device: torch.device):
        self.t0, self.seen, self.loss_sum, self.steps = time.time(), 0, torch.zeros((), device=device), 0

    def images_per_s(self) -> float:
        return self.seen / (time.time() - self.t0)


@dataclass
class Run:
    """A run once set up: what the epoch loop trains and where it writes, and its counters (those a
    checkpoint holds, so that a resumed run goes on exactly where the checkpoint left it)."""
    cfg: TrainConfig                 # the run's config (a resumed run's own, see resumed_config)
    d: Dist
    model: torch.nn.Module           # the model that is saved, validated and sampled
    net: torch.nn.Module             # what a training step calls: the model, compiled and/or in DDP
    opt: torch.optim.Optimizer
    crit: Criterion
    amp: torch.autocast              # bf16 on CUDA with --amp, else a no-op
    train_b: Batches
    val_b: Batches
    fixed: torch.Tensor | None       # the validation batch of the sample grids (rank 0 only)
    metrics: list[dict]              # one dict per validation, as the lines of metrics.jsonl
    window: Window                   # the training since the last validation
    horizon: int                     # steps the learning-rate schedule spans (--epochs)
    total: int                       # the step this run stops at (--max-steps, else horizon)
    epoch: int = 0                   # epochs completed
    skip: int = 0                    # steps of the current epoch already done (a mid-epoch resume)
    step: int = 0                    # optimizer steps in all
    best: float = math.inf           # lowest validation loss so far (best.pt's)
    last_good: tuple[str, int] | None = None  # (path, step) of the newest last.pt, for the stop message

    @property
    def spe(self) -> int:
        """Training steps per epoch."""
        return self.train_b.steps_per_epoch()

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.cfg.out, "metrics.jsonl")


def resumed_config(cfg: TrainConfig, resume: dict) -> TrainConfig:
    """--resume: the run continues as it was configured; only where it runs and how far it goes may change."""
    keep = {k: getattr(cfg, k) for k in ("resume", "epochs", "max_steps", "device", "workers",
                                         "progress", "out", "threads", "checkpoint_every", "cache_dir",
                                         "debug_rank_dump")}
    return TrainConfig(**{**resume["train_config"], **keep})


def load_data(cfg: TrainConfig, d: Dist) -> tuple[Batches, Batches]:
    """The training and validation batches: --data less --exclude's photos, and --val or a seeded
    --val-fraction of --data held out."""
    paths = find_images(cfg.data)
    if cfg.exclude:
        n = len(paths)
        paths = without_excluded(paths, cfg.data, cfg.exclude)
        log(d, f"{n - len(paths)} photos of {cfg.data} left out ({cfg.exclude})")
    if cfg.val:
        train_paths, val_paths = paths, find_images(cfg.val)
    else:
        train_paths, val_paths = split_holdout(paths, cfg.val_fraction, cfg.seed)
    train_b = Batches(cfg, train_paths, d, train=True)
    val_b = Batches(cfg, val_paths, d, train=False)
    log(d, f"{train_b.n} training and {val_b.n} validation images, {d.world} process(es) on {d.device}")
    return train_b, val_b


def build_training_model(cfg: TrainConfig, d: Dist, train_b: Batches, resume: dict | None):
    """The model on the device: --resume's architecture (its weights are loaded later, with the optimizer),
    or a new one (with --init's weights if given); its mean or encoder frozen as the flags say."""
    if resume is not None:
        model = build_model(resume["model_config"]).to(d.device)
        if "ab_prior" in resume:
            model.ab_prior = resume["ab_prior"]["prior"].float()
    else:
        init = load_checkpoint(cfg.init) if cfg.init else None
        model = new_model(cfg, train_b, pretrained=init is None, init=init).to(d.device)
        if model.cfg.head == "classification":
            log(d, f"classification over {model.cfg.num_bins} ab bins{' (from --init)' if init else ''}, "
                   f"rebalancing lambda {cfg.rebalance_lambda}")
        if init is not None:
            load_init(model, init, cfg.init)
    if cfg.var_only:
        model.freeze_mean()
    elif model.cfg.encoder != "unet" and cfg.encoder_lr == 0:
        model.freeze_encoder()
    return model


def wrap_for_training(model, cfg: TrainConfig, d: Dist):
    """-> (the network a training step calls, the autocast context). The model becomes channels-last in
    place; --compile and DDP wrap it, so that checkpoints keep the plain model's keys."""
    cuda = d.device.type == "cuda"
    # Channels-last: faster on CUDA, and on this project's 2-core CPU too (6-10% per training step).
    model.to(memory_format=torch.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    net = torch.compile(model) if cfg.compile else model
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if cuda else None)
    return net, torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and cuda)


def open_run_folder(cfg: TrainConfig, d: Dist, mcfg: ModelConfig, resumed: bool, step: int) -> list[dict]:
    """Rank 0 writes config.json and makes samples/; a resumed run keeps the metrics lines up to its
    checkpoint's step and drops any written after it. -> those metrics (empty on the other ranks)."""
    os.makedirs(cfg.out, exist_ok=True)
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    metrics = []
    if d.main:
        with open(os.path.join(cfg.out, "config.json"), "w") as f:
            json.dump({"train": dataclasses.asdict(cfg), "model": mcfg.to_dict()}, f, indent=2)
        os.makedirs(os.path.join(cfg.out, "samples"), exist_ok=True)
        if resumed and os.path.exists(metrics_path):
            with open(metrics_path) as f:
                metrics = [m for m in map(json.loads, f) if m["step"] <= step]
        with open(metrics_path, "w") as f:  # drop lines written after the checkpoint we resume from
            f.writelines(json.dumps(m) + "\n" for m in metrics)
    return metrics


def setup(cfg: TrainConfig) -> Run:
    """Everything before the first step: processes, seeds, the config (a resumed run's own), data, model
    and optimizer (fresh, from --init, or --resume's state and counters), the wrapped network, the run
    folder and the sample batch."""
    d = Dist(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        cfg = resumed_config(cfg, resume)
    train_b, val_b = load_data(cfg, d)
    model = build_training_model(cfg, d, train_b, resume)
    opt = make_optimizer(model, cfg)
    counters = {}
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        counters = {"epoch": resume["epoch"], "skip": resume["step_in_epoch"], "step": resume["step"],
                    "best": resume["best_val_loss"], "last_good": (cfg.resume, resume["step"])}
        log(d, f"resumed from {cfg.resume} at epoch {counters['epoch']}, step {counters['step']}")
    crit = Criterion(cfg.loss, model, cfg.mse_weight)
    net, amp = wrap_for_training(model, cfg, d)
    metrics = open_run_folder(cfg, d, model.cfg, resume is not None, counters.get("step", 0))
    fixed = next(iter(val_b.epoch(0)))[: cfg.sample_images] if d.main else None  # rank 0 has >= 1
    # The learning-rate schedule spans --epochs; --max-steps only stops early, so a run stopped by it and
    # resumed follows the very schedule of a run that never stopped.
    horizon = cfg.epochs * train_b.steps_per_epoch()
    return Run(cfg=cfg, d=d, model=model, net=net, opt=opt, crit=crit, amp=amp, train_b=train_b, val_b=val_b,
               fixed=fixed, metrics=metrics, window=Window(d.device), horizon=horizon,
               total=min(horizon, cfg.max_steps or horizon), **counters)


def write_checkpoint(run: Run, epoch: int, step_in_epoch: int, name: str = "last.pt") -> None:
    """Write OUT/name on rank 0; a failed write stops the run and leaves the previous file intact."""
    path = os.path.join(run.cfg.out, name)
    if run.d.main:
        try:
            save_checkpoint(make_checkpoint(run.model, run.opt, run.cfg, epoch, step_in_epoch, run.step,
                                            run.best), path)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e}); "
                                  "the previous one is kept") from None
    if name == "last.pt":
        run.last_good = (path, run.step)


def mean_loss_if_finite(run: Run, weights: bool) -> float | None:
    """The window's loss averaged over steps and processes, or None if it, or any weight (weights=True;
    checked before every save, since a finite loss can still be followed by an update to inf), is not
    finite. One host sync, and every process reaches the same verdict."""
    d, w = run.d, run.window
    ok = (torch.stack([t.isfinite().all() for t in run.model.state_dict().values()]).all().float()
          if weights else torch.ones((), device=d.device))
    lv, ok = d.mean(torch.stack([w.loss_sum / max(1, w.steps), ok])).tolist()
    return lv if math.isfinite(lv) and ok == 1.0 else None


def train_one_epoch(run: Run) -> tuple[str | None, int]:
    """The steps of epoch run.epoch from step run.skip, to the epoch's end or to run.total; last.pt every
    --checkpoint-every steps in between. The host syncs only to log (every 25 steps) or to save.
    -> (why training must stop, or None; the steps of the epoch now done)."""
    from tqdm import tqdm
    cfg, d, w, spe = run.cfg, run.d, run.window, run.spe
    stopped, s = None, run.skip - 1
    bar = tqdm(total=spe, initial=run.skip, desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
               disable=not (cfg.progress and d.main), dynamic_ncols=True)
    for s, rgb in enumerate(run.train_b.epoch(run.epoch, run.skip), start=run.skip):
        l_n, ab_n = model_inputs(run.model.cfg.norm, rgb)
        hints = None
        if run.model.cfg.hints:  # simulated users, drawn from a generator seeded per step (resumable)
            g = torch.Generator().manual_seed(cfg.seed * 31_337 + run.epoch * 100_003 + s)
            hints = simulate_hints(ab_n, g, p_none=cfg.hint_p_none)
        loss = train_step(run.net, run.opt, run.crit, l_n, ab_n, lr_at(run.step, run.horizon, cfg), run.amp,
                          hints)
        run.step += 1
        w.seen += len(rgb) * d.world
        w.loss_sum += loss.detach()
        w.steps += 1
        bar.update(1)
        save_now = (cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and s < spe - 1
                    and run.step < run.total)
        if run.step % 25 == 0 or s == spe - 1 or save_now:  # host sync only when logging or saving
            lv = mean_loss_if_finite(run, weights=save_now)
            if lv is None:
                stopped = f"non-finite loss or weights at step {run.step}"
                break
            bar.set_postfix(loss=f"{lv:.4f}", img_s=f"{w.images_per_s():.0f}")
        if save_now:
            write_checkpoint(run, run.epoch, s + 1)
        if run.step >= run.total:
            break
    bar.close()
    return stopped, s + 1


def record(run: Run, m: dict, finished_epoch: bool) -> None:
    """Rank 0, after a validation: the metrics line, the loss curve, the sample grid and the log line."""
    run.metrics.append(m)
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(m) + "\n")
    plot_curves(run.metrics, os.path.join(run.cfg.out, "loss_curve.png"))
    sample = f"epoch_{run.epoch:03d}.png" if finished_epoch else f"step_{run.step:07d}.png"
    save_samples(run.model, run.fixed, run.model.cfg.norm, os.path.join(run.cfg.out, "samples", sample))
    with_hints = f", {m['val_psnr_hints']:.2f} dB with {VAL_HINTS} hints" if "val_psnr_hints" in m else ""
    log(run.d, f"epoch {m['epoch']:.2f} step {run.step}: train {m['train_loss']:.4f} val {m['val_loss']:.4f} "
               f"psnr {m['val_psnr']:.2f} dB{with_hints} ({m['images_per_s']:.0f} img/s)")


def end_window(run: Run, done: int) -> str | None:
    """After a window's last step (done: steps of run.epoch done): check the loss and weights, validate,
    move the counters to where a resume would start, record, and write best.pt (a new lowest validation
    loss) and last.pt. -> why training must stop, or None."""
    d, w = run.d, run.window
    train_loss = mean_loss_if_finite(run, weights=True)
    if train_loss is None:
        return f"non-finite loss or weights in epoch {run.epoch + 1}"
    finished_epoch = done >= run.spe
    d.sync_buffers(run.model)
    v = validate(run.model, run.val_b, run.crit, d, run.model.cfg.norm)
    m = {"epoch": run.epoch + 1 if finished_epoch else run.epoch + done / run.spe, "step": run.step,
         "train_loss": train_loss, **v, "lr": lr_at(run.step - 1, run.horizon, run.cfg),
         "images_per_s": w.images_per_s(), "time": time.time()}
    run.epoch, run.skip = (run.epoch + 1, 0) if finished_epoch else (run.epoch, done)
    if d.main:
        record(run, m, finished_epoch)
    if v["val_loss"] < run.best:
        run.best = v["val_loss"]
        write_checkpoint(run, run.epoch, run.skip, "best.pt")
    write_checkpoint(run, run.epoch, run.skip)
    run.window = Window(d.device)
    return None


def finish(run: Run, stopped: str | None) -> dict:
    """After the last step: report unreadable files, dump the rank checksum (tests), leave the process
    group, and say where a stopped run can be resumed from. -> train()'s summary."""
    d = run.d
    skipped = run.train_b.skipped() + run.val_b.skipped()  # a collective call under torchrun
    if skipped and d.main:
        print(f"warning: skipped {skipped} unreadable image file(s) in all", file=sys.stderr)
    if run.cfg.debug_rank_dump:
        with open(os.path.join(run.cfg.out, f"rank{d.rank}.json"), "w") as f:
            json.dump({"rank": d.rank, "step": run.step, "sha256": state_checksum(run.model)}, f)
    d.close()
    if stopped:
        where = (f"the last good checkpoint is {run.last_good[0]} (step {run.last_good[1]})" if run.last_good
                 else "no checkpoint was written (a lower --lr may help)")
        stopped = f"{stopped}; stopped training, {where}"
        if d.main:
            print(f"error: {stopped}", file=sys.stderr)
    return {"stopped": stopped, "step": run.step, "epoch": run.epoch, "metrics": run.metrics, "skipped": skipped}


def train(cfg: TrainConfig) -> dict:
    """Train as cfg says -> {"stopped": None or why, "step", "epoch", "metrics", "skipped"}.

    Epochs run until --epochs or --max-steps; a window of --val-every epochs (or the last, or a
    --max-steps stop mid-epoch) ends with a validation, a metrics line, samples and checkpoints."""
    run = setup(cfg)
    stopped = None
    while run.epoch < run.cfg.epochs and run.step < run.total and stopped is None:
        stopped, done = train_one_epoch(run)
        if stopped:
            break
        if (done >= run.spe and (run.epoch + 1) % run.cfg.val_every and run.epoch + 1 < run.cfg.epochs
                and run.step < run.total):
            run.epoch, run.skip = run.epoch + 1, 0  # no validation after this epoch (--val-every)
            continue
        stopped = end_window(run, done)
    return finish(run, stopped)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    resume_hint = "resume with --resume " + os.path.join(cfg.out, "last.pt")
    try:
        # SIGTERM / SIGHUP (a scheduler, a closed terminal) while a checkpoint is being written: its temporary
        # file goes, the previous last.pt stays. SIGINT is Python's KeyboardInterrupt, handled below.
        with remove_temporaries_on_signals(f"stopped by {{signal}}; {resume_hint}", signals=("SIGTERM", "SIGHUP")):
            result = train(cfg)
    except (DataError, CheckpointError, PretrainedWeightsMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {resume_hint}", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 1 if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
