"""The grid that chose hints.PROPAGATION: PSNR gain over no hints of (sigma_space, sigma_l) settings of
hints.propagate_hints, with 1, 10 and 50 simulated hints, on every 10th photo of val/general (30 photos).

python -m experiments.hint_propagation_grid --model CKPT [--data ../shared/data/val/general]

The network runs once per photo and hint count; each setting only re-spreads and re-merges its output.
"""
import argparse
import itertools
import os
import sys

import numpy as np
import torch
from PIL import Image

from colorizer import Colorizer, _downscale
from dataset import find_images
from evaluate import SHARED, image_hints, psnr
from hints import hint_map, propagate_hints
from lab import levels_to_l

SETTINGS = list(itertools.product([0.3, 0.6, 1.0, 2.0], [7, 10, 15]))
COUNTS = [1, 10, 50]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=os.path.join(SHARED, "val", "general"))
    p.add_argument("--photos", type=int, default=30, help="how many of every 10th photo")
    args = p.parse_args()
    torch.set_num_threads(1)
    c = Colorizer.from_checkpoint(args.model)
    paths = find_images(args.data)[::10][: args.photos]
    gains = {(n, s): [] for n in COUNTS for s in SETTINGS}
    for path in paths:
        true = np.asarray(Image.open(path).convert("RGB"))
        grey = np.asarray(Image.fromarray(true).convert("L"))
        h, w = grey.shape
        nw, nh = c.net_size(w, h)
        l_small = levels_to_l(_downscale(grey, (nw, nh)))[None, None]
        auto = psnr(c.colorize_grey(grey), true)
        for n in COUNTS:
            hints = image_hints(c, true, os.path.basename(path), n)
            c.propagation, ab = None, c.predict_ab(grey, hints)   # the network's answer only
            hint_input = hint_map(hints, (w, h), (nw, nh), c.ab_scale)
            for s in SETTINGS:
                spread = propagate_hints(ab, l_small, hint_input, c.ab_scale, *s)
                gains[(n, s)].append(psnr(c.colorize_grey_with_ab(grey, spread), true) - auto)
    print(f"{len(paths)} photos of {args.data}; PSNR gain over no hints, dB")
    for n in COUNTS:
        print(f"{n:3d} hints: " + "  ".join(f"{s}: {np.mean(gains[(n, s)]):+.2f}" for s in SETTINGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
