"""The README's picture for --reference: grey | automatic | reference | result | original, on Kodak photos.

python -m experiments.reference_figure [--out experiments/results/reference/reference.png]

Each row colours one Kodak photo (made grey as a user would have it) with a different Kodak photo of the same
kind as its reference, at the default strength; the original is shown last for comparison.
"""
import argparse
import os

from PIL import Image

from colorizer import DEFAULT_MODEL, Colorizer
from experiments.side_by_side import save_sheet

KODAK = os.path.join("..", "shared", "data", "bench", "kodak")
PAIRS = [("kodim15", "kodim04"), ("kodim22", "kodim01")]  # (photo, its reference)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("experiments", "results", "reference", "reference.png"))
    p.add_argument("--height", type=int, default=160)
    args = p.parse_args()
    colorizer = Colorizer.from_checkpoint(DEFAULT_MODEL)
    rows = []
    for photo, ref in PAIRS:
        rgb = Image.open(os.path.join(KODAK, photo + ".png")).convert("RGB")
        reference = Image.open(os.path.join(KODAK, ref + ".png")).convert("RGB")
        grey = rgb.convert("L")
        rows.append([grey.convert("RGB"), colorizer.colorize(grey), reference,
                     colorizer.colorize(grey, reference=reference), rgb])
    save_sheet(rows, ["grey", "automatic", "reference", "with the reference", "original"], args.height, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
