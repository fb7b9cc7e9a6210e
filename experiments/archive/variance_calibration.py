"""Does a variance head know how wrong it is? Calibration of a regression_var network, photo by photo.

python -m experiments.archive.variance_calibration --model runs/lite0_mse_long_var/last.pt \
    --images ../shared/data/val/general ../shared/data/val/bsds

Each photo is resized to the size the colorizer's network sees it at (Colorizer.net_size; --size sets its
short side), split into L and ab as in training, and run through the network. Per photo, at the head's (half)
resolution and in normalised ab units summed over a and b: E, the mean squared error of the predicted mean; V,
the mean predicted variance; D, the spread of the predicted mean colours about their mean; T, the same spread
of the true colours. Printed per folder: E / V (1 if the variance is calibrated on average), the rank
correlation of V with E across photos (does the branch know which photos it is unsure of?) and T / D (how much
colour the mean misses; the median over photos). The spread decode (model.decode) stretches a photo by
sqrt(1 + s V / D), so with a calibrated V and s = 1 it restores the colourfulness E + D the network expects
the original to have.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorizer import Colorizer
from dataset import find_images
from model import colour_spread, predicted_variance


def photo_stats(col: Colorizer, path: str) -> tuple[float, float, float, float]:
    """(E, V, D, T) of one photo at the size col's network sees it, as the module docstring defines them."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = im.resize(col.net_size(*im.size), Image.BICUBIC)
    rgb = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
    l_n, ab_n = col.norm.split(rgb)
    with torch.inference_mode():
        out = col.model(l_n).float()
    mean = out[:, :2]
    target = F.avg_pool2d(ab_n, 2, ceil_mode=True)[..., : mean.shape[-2], : mean.shape[-1]]
    return (float(((target - mean) ** 2).sum(1).mean()), float(predicted_variance(out).sum(1).mean()),
            float(colour_spread(mean)), float(colour_spread(target)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a regression_var checkpoint")
    p.add_argument("--images", nargs="+", default=["../shared/data/val/general"])
    p.add_argument("--size", type=int, default=0, help="network input size (0: the checkpoint's)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    col = Colorizer.from_checkpoint(args.model, size=args.size or None)
    if col.model.cfg.head != "regression_var":
        p.error("this study is for regression_var heads")
    print(f"{args.model} at {col.size} px")
    print("| photos | E / V | rank corr. of V with E | median T / D |\n|---|---|---|---|")
    for folder in args.images:
        stats = np.array([photo_stats(col, path) for path in find_images(folder)])
        e, v, d, t = stats.T
        print(f"| {folder} ({len(stats)}) | {e.mean() / v.mean():.2f} | {spearman(v, e):.2f} | "
              f"{np.median(t / np.maximum(d, 1e-8)):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
