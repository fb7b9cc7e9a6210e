"""Datasets of colour photos for training: file discovery, decoding, augmentation and an in-memory cache.

Two paths produce the same samples:
- ColorDataset streams files through PIL (resize so the short side covers the crop, RandomCrop and
  RandomHorizontalFlip for training, CenterCrop for validation); returns normalised (L, ab), or the uint8
  RGB crop with lab=False so that the Lab conversion can run batched on the training device.
- ImageCache decodes and resizes every image once into one uint8 array (kept in memory and optionally
  saved as .npy for later runs); CachedBatches then crops, flips and converts whole batches on the device.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

from utils import IMAGE_EXTENSIONS, LabNorm, write_atomic



class DataError(Exception):
    """A data folder that is missing or holds no images; the message names it."""


def find_images(root: str) -> list[str]:
    """All image files below root (recursive, extension match in any case), sorted."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: image folder not found")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in filenames
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    if not found:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found)


def load_rgb(path: str) -> Image.Image:
    """Decode any image file as upright 8-bit RGB (EXIF orientation applied, 16-bit scaled down)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            # 16-bit modes are 16-bit whatever their content (a dark photo may stay below 256); only
            # 32-bit "I" leaves the range to be guessed.
            peak = 65535.0 if im.mode != "I" or a.max() > 255 else 255.0
            im = Image.fromarray(np.clip(a / peak * 255 + 0.5, 0, 255).astype(np.uint8), "L")
        return im.convert("RGB")


def resize_short_side(im: Image.Image, short: int) -> Image.Image:
    w, h = im.size
    s = short / min(w, h)
    return im.resize((max(short, round(w * s)), max(short, round(h * s))), Image.BICUBIC)


def split_holdout(paths: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A reproducible split of one folder into (train, held-out) lists."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = max(1, int(round(len(paths) * fraction))) if fraction > 0 else 0
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    if not train:
        raise DataError(f"too few images ({len(paths)}) to hold out {fraction:.0%} for validation")
    return train, val


def report_skipped(bad: list[tuple[str, str]], what: str = "training") -> None:
    """One message for all unreadable files: how many, and the first few names with the reason."""
    if bad:
        names = "; ".join(f"{os.path.basename(p)} ({why})" for p, why in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        print(f"warning: skipped {len(bad)} unreadable {what} image(s): {names}{more}", file=sys.stderr)


def lab_sample(rgb8: torch.Tensor, norm: LabNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3, H, W) -> normalised (L (1,H,W), ab (2,H,W))."""
    l_n, ab_n = norm.split(rgb8[None])
    return l_n[0], ab_n[0]


class ColorDataset(Dataset):
    """Streams photos from disk. Item: (L (1,c,c), ab (2,c,c)) normalised, or uint8 RGB (3,c,c) if not lab.

    Files that cannot be opened are found at construction (header check), reported once and dropped;
    a file that fails later, while decoding (e.g. a truncated JPEG), is reported once, marked so that no
    later epoch tries it again, and replaced by the next readable one, never stopping an epoch. The marks
    live in shared memory, so DataLoader workers see and set the same ones; `skipped` counts both kinds.
    """

    def __init__(self, paths: list[str], crop_size: int, train: bool, resize: int | None = None,
                 lab: bool = True, norm: LabNorm = LabNorm(), what: str = "training", report: bool = True):
        self.crop_size, self.lab, self.norm = crop_size, lab, norm
        self.resize = max(resize or crop_size, crop_size)
        self.report = report
        crop = (transforms.RandomCrop(crop_size) if train else transforms.CenterCrop(crop_size))
        self.augment = transforms.Compose([crop, transforms.RandomHorizontalFlip()] if train else [crop])
        self.paths, self.bad = [], []
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.verify()
                self.paths.append(p)
            except Exception as e:  # PIL raises many types for broken files
                self.bad.append((p, type(e).__name__))
        if report:
            report_skipped(self.bad, what)
        if not self.paths:
            raise DataError("no readable images among the files given")
        self.failed = torch.zeros(len(self.paths), dtype=torch.uint8).share_memory_()  # 1: failed to decode

    @property
    def skipped(self) -> int:
        """Files left out so far: unreadable at construction plus those that failed while decoding."""
        return len(self.bad) + int(self.failed.sum())

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> Image.Image:
        """The image at i, or the next readable one after it (wrapping round)."""
        n = len(self.paths)
        for j in ((i + k) % n for k in range(n)):
            if self.failed[j]:
                continue
            try:
                return load_rgb(self.paths[j])
            except Exception as e:  # PIL raises many types for broken files
                if not self.failed[j]:
                    self.failed[j] = 1
                    if self.report:
                        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                        print(f"warning: skipped unreadable image {self.paths[j]} ({msg[:120]})",
                              file=sys.stderr, flush=True)
        raise DataError("none of the images could be decoded")

    def __getitem__(self, i: int):
        im = self.augment(resize_short_side(self._load(i), self.resize))
        rgb8 = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        return lab_sample(rgb8, self.norm) if self.lab else rgb8


# ---------------------------------------------------------------------------------------------------
def decode_square(args: tuple[str, int]) -> np.ndarray | str:
    """Worker: path -> (size, size, 3) uint8, resized (short side) and centre-cropped; or an error."""
    path, size = args
    try:
        im = resize_short_side(load_rgb(path), size)
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:120]
    w, h = im.size
    x, y = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((x, y, x + size, y + size)), dtype=np.uint8)


def _cache_key(paths: list[str], size: int) -> str:
    h = hashlib.sha1(str(size).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class ImageCache:
    """Every image decoded once: images (N, size, size, 3) uint8, the paths they came from, and the
    (path, reason) of each file that could not be decoded."""
    images: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def build(cls, paths: list[str], size: int, workers: int = 0, cache_dir: str | None = None,
              progress: bool = True, what: str = "training", report: bool = True) -> "ImageCache":
        """Decode (in `workers` processes), or reuse cache_dir/<key>.npy when the files and size match.

        Unreadable files are left out and reported once per build (report=False: silently), also when
        the cache is reused.
        """
        key = _cache_key(paths, size)
        if cache_dir:
            npy, meta = (os.path.join(cache_dir, f"images_{key}{ext}") for ext in (".npy", ".json"))
            cached = cls._reuse(npy, meta)
            if cached is not None:
                if report:
                    report_skipped(cached.skipped, what)
                return cached
        from tqdm import tqdm
        jobs = [(p, size) for p in paths]
        if workers > 0:
            with ProcessPoolExecutor(workers) as pool:
                results = list(tqdm(pool.map(decode_square, jobs, chunksize=32), total=len(jobs),
                                    desc=f"caching {what} images", disable=not progress, leave=False))
        else:
            results = [decode_square(j) for j in tqdm(jobs, desc=f"caching {what} images",
                                                        disable=not progress, leave=False)]
        bad = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
        if report:
            report_skipped(bad, what)
        kept = [p for p, r in zip(paths, results) if not isinstance(r, str)]
        if not kept:
            raise DataError("no readable images among the files given")
        images = np.stack([r for r in results if not isinstance(r, str)])
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            # The array first, its index second: a reader that finds the index finds a complete array.
            write_atomic(npy, lambda f: np.save(f, images))
            write_atomic(meta, lambda f: f.write(json.dumps(
                {"size": size, "paths": kept, "skipped": bad}).encode()))
        return cls(images, kept, bad)

    @classmethod
    def _reuse(cls, npy: str, meta: str) -> "ImageCache | None":
        """The saved cache, or None if it is absent or unusable (then it is rebuilt and overwritten)."""
        if not (os.path.exists(npy) and os.path.exists(meta)):
            return None
        try:
            with open(meta) as f:
                info = json.load(f)
            images = np.load(npy, mmap_mode="r")
            kept, bad = info["paths"], [tuple(b) for b in info.get("skipped", [])]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(images, kept, bad) if len(images) == len(kept) else None

    def __len__(self) -> int:
        return len(self.images)


def random_crop_flip(batch: torch.Tensor, crop: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """(B, S, S, 3) uint8 on any device -> (B, 3, crop, crop) uint8: a random crop and flip per image.

    The result is a channels-last view (rgb_to_lab reads it as it is). The offsets and flips are drawn on
    the CPU from `generator`, in the same order on every device, so a seed gives the same crops anywhere.
    """
    b, s = batch.shape[0], batch.shape[1]
    dev = batch.device
    oy = torch.randint(0, s - crop + 1, (b,), generator=generator)
    ox = torch.randint(0, s - crop + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    if dev.type == "cpu":
        # B numpy slice copies (a flip is a negative stride): ~4x faster than one (B, crop, crop)
        # advanced-indexing gather, which computes an int64 offset per pixel. numpy, not torch, because
        # torch would hand each small copy to its thread pool, which costs more than it saves (much more
        # when other processes compete for the cores).
        out = torch.empty((b, crop, crop, 3), dtype=batch.dtype)
        src, dst = batch.numpy(), out.numpy()
        for i, (y, x, f) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist())):
            win = src[i, y:y + crop, x:x + crop]
            dst[i] = win[:, ::-1] if f else win
        return out.permute(0, 3, 1, 2)
    # On a GPU, one gather kernel for the whole batch; the parameters go over in a single non-blocking
    # copy (a blocking copy per tensor would wait for the GPU's queued work each time).
    oy, ox, flip = torch.stack([oy, ox, flip.long()]).to(dev, non_blocking=True)
    flip = flip.bool()
    ar = torch.arange(crop, device=dev)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = torch.where(flip[:, None], ox[:, None] + crop - 1 - ar, ox[:, None] + ar)[:, None, :]
    return batch[torch.arange(b, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def random_resized_crop_flip(batch: torch.Tensor, crop: int, scale_min: float,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, S, S, 3) uint8 on any device -> (B, 3, crop, crop) uint8: per image a random square window of
    side U(scale_min, 1) * S at a random place, optionally mirrored, resampled (bilinear) to crop x crop.

    Scale augmentation: the model sees objects both at the size it will meet them at inference and
    magnified up to 1/scale_min times (close-ups). One grid_sample for the whole batch; the random draws
    are made on the CPU from `generator`, so a seed gives the same windows on any device.
    """
    b, s = batch.shape[0], batch.shape[1]
    side = s * (scale_min + (1 - scale_min) * torch.rand(b, generator=generator, dtype=torch.float64))
    cy = side / 2 + (s - side) * torch.rand(b, generator=generator, dtype=torch.float64)
    cx = side / 2 + (s - side) * torch.rand(b, generator=generator, dtype=torch.float64)
    flip = torch.rand(b, generator=generator) < 0.5
    # Normalised coordinates (align_corners=False): input = scale * output + shift, per image.
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.where(flip, -side / s, side / s)
    theta[:, 1, 1] = side / s
    theta[:, 0, 2] = 2 * cx / s - 1
    theta[:, 1, 2] = 2 * cy / s - 1
    theta = theta.float().to(batch.device, non_blocking=True)
    grid = F.affine_grid(theta, [b, 3, crop, crop], align_corners=False)
    src = batch.permute(0, 3, 1, 2).float()
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def center_crop(batch: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, crop, crop) uint8, the central window."""
    o = (batch.shape[1] - crop) // 2
    return batch[:, o:o + crop, o:o + crop].permute(0, 3, 1, 2)
