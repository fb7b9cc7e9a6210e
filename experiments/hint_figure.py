"""Colour hints, shown: grey | automatic | with N hints (marked) | original, on public-domain photos that
ship with scikit-image.

python -m experiments.hint_figure --model CKPT --out experiments/results/hints/hints.png [--hints 5]

The hints are what a user who knew the true colours would give: N seeded random points, each with the
original's colour there (evaluate.py's simulated users). Each hint is drawn as a ring of its colour.
"""
import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from colorizer import Colorizer
from evaluate import image_hints
from experiments.side_by_side import save_sheet

# All 3:2, so that the columns line up (the astronaut cropped to her head and shoulders).
PHOTOS = {"coffee": data.coffee, "astronaut": lambda: data.astronaut()[90:431], "chelsea": data.chelsea}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hints", type=int, default=5)
    p.add_argument("--height", type=int, default=220)
    args = p.parse_args()
    colorizer = Colorizer.from_checkpoint(args.model)
    rows = []
    for name, load in PHOTOS.items():
        rgb = np.asarray(Image.fromarray(load()).convert("RGB"))
        grey = Image.fromarray(rgb).convert("L")
        hints = image_hints(colorizer, rgb, name, args.hints)
        marked = colorizer.colorize(grey, hints=hints).convert("RGB")
        draw = ImageDraw.Draw(marked)
        r = max(6, rgb.shape[0] // 28)
        for h in hints:
            draw.ellipse((h.x - r, h.y - r, h.x + r, h.y + r), outline=(255, 255, 255), width=max(1, r // 3) + 2)
            draw.ellipse((h.x - r, h.y - r, h.x + r, h.y + r), outline=h.rgb, width=max(1, r // 3))
        rows.append([grey.convert("RGB"), colorizer.colorize(grey).convert("RGB"), marked, Image.fromarray(rgb)])
    names = ["grey input", "automatic", f"with {args.hints} hints (rings)", "original"]
    save_sheet(rows, names, args.height, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
