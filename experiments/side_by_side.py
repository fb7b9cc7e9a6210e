"""Side-by-side samples of several checkpoints on public-domain photos that ship with scikit-image.

python -m experiments.side_by_side --out experiments/results/side_by_side.png NAME=CKPT [NAME=CKPT ...]

Rows: the DSCOVR launch (public domain, SpaceX), the coffee cup (CC0) and the astronaut (public domain,
NASA). Columns: grey input, one per checkpoint, original. The photos are made grey as a user would have
them (PIL mode 'L') and colorized at full resolution, then shown at a common height.
"""
import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from colorizer import Colorizer  # run from the repository root with python -m

PHOTOS = {"rocket": data.rocket, "coffee": data.coffee, "astronaut": data.astronaut}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="NAME=CHECKPOINT")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=200)
    args = p.parse_args()
    models = [(m.split("=", 1)[0], Colorizer.from_checkpoint(m.split("=", 1)[1])) for m in args.models]
    names = ["grey"] + [n for n, _ in models] + ["original"]
    rows = []
    for load in PHOTOS.values():
        rgb = Image.fromarray(load()).convert("RGB")
        grey = rgb.convert("L")
        cells = [grey.convert("RGB")] + [c.colorize(grey).convert("RGB") for _, c in models] + [rgb]
        w = round(rgb.width * args.height / rgb.height)
        rows.append(np.concatenate([np.asarray(c.resize((w, args.height), Image.BICUBIC)) for c in cells], 1))
    width = max(r.shape[1] for r in rows)
    sheet = np.full((24 + args.height * len(rows), width, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        sheet[24 + i * args.height: 24 + (i + 1) * args.height, : r.shape[1]] = r
    im = Image.fromarray(sheet)
    cell_w = rows[0].shape[1] // len(names)
    draw = ImageDraw.Draw(im)
    for k, n in enumerate(names):
        draw.text((k * cell_w + 6, 6), n, fill=(0, 0, 0))
    im.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
