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


def labelled_sheet(rows: list[list[Image.Image]], names: list[str], height: int) -> Image.Image:
    """Rows of RGB images (the same count each), every image shown at `height`, under a strip of column
    names (placed for the first row's cell width)."""
    strips = []
    for cells in rows:
        w = round(cells[0].width * height / cells[0].height)
        strips.append(np.concatenate([np.asarray(c.resize((w, height), Image.BICUBIC)) for c in cells], 1))
    sheet = np.full((24 + height * len(strips), max(r.shape[1] for r in strips), 3), 255, np.uint8)
    for i, r in enumerate(strips):
        sheet[24 + i * height: 24 + (i + 1) * height, : r.shape[1]] = r
    im = Image.fromarray(sheet)
    cell_w = strips[0].shape[1] // len(names)
    draw = ImageDraw.Draw(im)
    for k, n in enumerate(names):
        draw.text((k * cell_w + 6, 6), n, fill=(0, 0, 0))
    return im


def save_sheet(rows: list[list[Image.Image]], names: list[str], height: int, path: str) -> None:
    """labelled_sheet(rows, names, height), written to path."""
    labelled_sheet(rows, names, height).save(path)
    print(f"wrote {path}")


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
        rows.append([grey.convert("RGB")] + [c.colorize(grey).convert("RGB") for _, c in models] + [rgb])
    save_sheet(rows, names, args.height, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
