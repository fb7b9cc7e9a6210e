"""Old photographs of people, grey / v2 / v2 with the colour predictor (`--memory
checkpoints/colour_predictor.npz`): the README's picture for issue 28, and each output's colourfulness.

python -m experiments.old_photos_figure FOLDER --out experiments/results/old_photos.jpg [--height 220] [--only NAME ...]

FOLDER holds real old black-and-white photos (not committed: see the figure's provenance list in
experiments/README.md). Each is made grey (PIL mode 'L'; some scans are sepia-toned), coloured at full
resolution, and shown at a common height, one photo a row.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness
from experiments.memory_study import photos
from experiments.side_by_side import labelled_sheet
from memory import load_memory


def pad(im: Image.Image, aspect: float) -> Image.Image:
    """im centred on a white canvas of its height and width height x aspect."""
    canvas = Image.new("RGB", (round(im.height * aspect), im.height), "white")
    canvas.paste(im, ((canvas.width - im.width) // 2, 0))
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--memory", default=os.path.join("checkpoints", "colour_predictor.npz"))
    ap.add_argument("--height", type=int, default=220)
    ap.add_argument("--only", nargs="*", default=None, help="file names to use, in this order (default: all)")
    args = ap.parse_args(argv)
    colorizer, memory = Colorizer.from_checkpoint(args.model), load_memory(args.memory)
    paths = [os.path.join(args.folder, n) for n in args.only] if args.only else photos(args.folder)
    triples, cf = [], []
    for p in paths:
        with Image.open(p) as im:
            grey = im.convert("L")
        g = np.asarray(grey)
        auto = colorizer.colorize(grey).convert("RGB")
        prior = colorizer.colorize(grey, prior=colorizer.memory_prior(g, memory)).convert("RGB")
        cf.append((colourfulness(np.asarray(auto)), colourfulness(np.asarray(prior))))
        print(f"{os.path.basename(p):<55} colourfulness v2 {cf[-1][0]:5.1f}, with the predictor {cf[-1][1]:5.1f}")
        triples.append([grey.convert("RGB"), auto, prior])
    means = np.mean(cf, 0)
    print(f"mean colourfulness: v2 {means[0]:.1f}, with the predictor {means[1]:.1f} ({len(cf)} photos)")
    aspect = max(t[0].width / t[0].height for t in triples)  # pad every cell to the widest shape: columns line up
    triples = [[pad(im, aspect) for im in t] for t in triples]
    labelled_sheet(triples, ["grey", "v2", "v2 + --memory checkpoints/colour_predictor.npz"],
                   args.height).save(args.out, quality=88)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
