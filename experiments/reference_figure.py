"""The README's picture for --reference: grey | automatic | reference | result | original.

python -m experiments.reference_figure [--out experiments/results/reference/reference.png]

Each row colours one photo that ships with scikit-image (made grey as a user would have it) with another as
its reference, at the default strength; the original is shown last for comparison. The photos: the astronaut
(NASA, public domain), the DSCOVR launch (SpaceX, public domain), the coffee cup and the cat (CC0).
"""
import argparse
import os

from PIL import Image
from skimage import data

from colorizer import DEFAULT_MODEL, Colorizer
from experiments.side_by_side import save_sheet

PAIRS = [(data.astronaut, data.rocket), (data.chelsea, data.coffee)]  # (photo, its reference)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("experiments", "results", "reference", "reference.png"))
    p.add_argument("--height", type=int, default=160)
    args = p.parse_args()
    colorizer = Colorizer.from_checkpoint(DEFAULT_MODEL)
    rows = []
    for photo, ref in PAIRS:
        rgb, reference = Image.fromarray(photo()).convert("RGB"), Image.fromarray(ref()).convert("RGB")
        grey = rgb.convert("L")
        rows.append([grey.convert("RGB"), colorizer.colorize(grey), reference,
                     colorizer.colorize(grey, reference=reference), rgb])
    save_sheet(rows, ["grey", "automatic", "reference", "with the reference", "original"], args.height, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
