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
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

from utils import LabNorm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
            peak = 65535.0 if a.max() > 255 else 255.0
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
    a file that fails later, while decoding, is replaced by the next readable one, never stopping an epoch.
    """

    def __init__(self, paths: list[str], crop_size: int, train: bool, resize: int | None = None,
                 lab: bool = True, norm: LabNorm = LabNorm()):
        self.crop_size, self.lab, self.norm = crop_size, lab, norm
        self.resize = max(resize or crop_size, crop_size)
        crop = (transforms.RandomCrop(crop_size) if train else transforms.CenterCrop(crop_size))
        self.augment = transforms.Compose([crop, transforms.RandomHorizontalFlip()] if train else [crop])
        self.paths, bad = [], []
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.verify()
                self.paths.append(p)
            except Exception as e:  # PIL raises many types for broken files
                bad.append((p, type(e).__name__))
        report_skipped(bad)
        if not self.paths:
            raise DataError("no readable images among the files given")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        for k in range(len(self.paths)):
            try:
                im = load_rgb(self.paths[(i + k) % len(self.paths)])
                break
            except Exception as e:
                print(f"warning: skipped {self.paths[(i + k) % len(self.paths)]}: {e}", file=sys.stderr)
        im = self.augment(resize_short_side(im, self.resize))
        rgb8 = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        return lab_sample(rgb8, self.norm) if self.lab else rgb8


# ---------------------------------------------------------------------------------------------------
def _decode_square(args: tuple[str, int]) -> np.ndarray | str:
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
    """Every image decoded once: images (N, size, size, 3) uint8 and the paths they came from."""
    images: np.ndarray
    paths: list[str]

    @classmethod
    def build(cls, paths: list[str], size: int, workers: int = 0, cache_dir: str | None = None,
              progress: bool = True, what: str = "training") -> "ImageCache":
        """Decode (in `workers` processes), or reuse cache_dir/<key>.npy when the files and size match."""
        key = _cache_key(paths, size)
        if cache_dir:
            npy, meta = (os.path.join(cache_dir, f"images_{key}{ext}") for ext in (".npy", ".json"))
            if os.path.exists(npy) and os.path.exists(meta):
                with open(meta) as f:
                    kept = json.load(f)["paths"]
                return cls(np.load(npy, mmap_mode="r"), kept)
        from tqdm import tqdm
        jobs = [(p, size) for p in paths]
        if workers > 0:
            with ProcessPoolExecutor(workers) as pool:
                results = list(tqdm(pool.map(_decode_square, jobs, chunksize=32), total=len(jobs),
                                    desc=f"caching {what} images", disable=not progress, leave=False))
        else:
            results = [_decode_square(j) for j in tqdm(jobs, desc=f"caching {what} images",
                                                        disable=not progress, leave=False)]
        bad = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
        report_skipped(bad, what)
        kept = [p for p, r in zip(paths, results) if not isinstance(r, str)]
        if not kept:
            raise DataError("no readable images among the files given")
        images = np.stack([r for r in results if not isinstance(r, str)])
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = os.path.join(cache_dir, f".tmp_{key}.npy")
            np.save(tmp, images)
            os.replace(tmp, npy)
            with open(meta, "w") as f:
                json.dump({"size": size, "paths": kept}, f)
        return cls(images, kept)

    def __len__(self) -> int:
        return len(self.images)


def random_crop_flip(batch: torch.Tensor, crop: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """(B, S, S, 3) uint8 on any device -> (B, 3, crop, crop) uint8: a random crop and flip per image.

    One gather for the whole batch instead of B Python-level crops.
    """
    b, s = batch.shape[0], batch.shape[1]
    dev = batch.device
    oy = torch.randint(0, s - crop + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, s - crop + 1, (b,), generator=generator).to(dev)
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    ar = torch.arange(crop, device=dev)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = torch.where(flip[:, None], ox[:, None] + crop - 1 - ar, ox[:, None] + ar)[:, None, :]
    return batch[torch.arange(b, device=dev)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def center_crop(batch: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, crop, crop) uint8, the central window."""
    o = (batch.shape[1] - crop) // 2
    return batch[:, o:o + crop, o:o + crop].permute(0, 3, 1, 2)
