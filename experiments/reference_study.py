"""How strongly should a reference photo's colours steer the decode? A grid over strength s and colour gain.

python -m experiments.reference_study [--data DIR] [--limit N] [--out JSON] [--model CKPT]

(The temperature T was also varied, 0.3 to 0.55, with the torch checkpoint's decode on 2026-12-06: see
experiments/README.md; an ONNX model's T is fixed at export, so the grid is now over s and the gain.)

For each photo and every (s, gain): the decode adds s (log h - log p) to the calibrated logits
(colour_prior.prior_bias) and stretches the colours by the centred gain, h the histogram of (a) the photo's own original ("self", the
upper bound) or (b) a seeded different photo of the same set and kind ("other", what users have). Prints
PSNR gain over grey, colourfulness as a share of the originals', and the total variation distance between
the output's ab histogram and the reference's, beside the automatic decode (s = 0).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np
from PIL import Image

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness, psnr, reference_paths
from image_io import INPUT_EXTENSIONS

STRENGTHS = (0.0, 0.3, 0.5, 0.7, 1.0, 1.5)
GAINS = (1.0,)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "val", "general"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, default=0, help="N photos evenly spaced over the sorted names; 0: all")
    ap.add_argument("--out", default=None, help="write the grid as JSON here")
    ap.add_argument("--strengths", type=float, nargs="+", default=STRENGTHS)
    ap.add_argument("--gains", type=float, nargs="+", default=GAINS, help="centred colour gain (model.Decode)")
    ap.add_argument("--refs", nargs="+", default=["self", "other"], choices=["self", "other"])
    args = ap.parse_args(argv)
    names = sorted(n for n in os.listdir(args.data) if n.lower().endswith(INPUT_EXTENSIONS))
    if args.limit and args.limit < len(names):
        names = [names[i] for i in np.linspace(0, len(names) - 1, args.limit).round().astype(int)]
    colorizer = Colorizer.from_checkpoint(args.model)
    bins, prior = colorizer.bins, colorizer.prior
    paths = [os.path.join(args.data, n) for n in names]
    trues = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    hists = [cp.photo_histogram(t, bins) for t in trues]
    others = [paths.index(p) for p in reference_paths(paths, "other")]
    acc: dict[tuple, list] = {}
    for i, true in enumerate(trues):
        grey = np.asarray(Image.fromarray(true).convert("L"))
        g_psnr, cf_orig = psnr(np.repeat(grey[..., None], 3, -1), true), colourfulness(true)
        refs = {"self": i, "other": others[i]}
        for ref, s, g in itertools.product(args.refs, args.strengths, args.gains):
            j = refs[ref]
            rgb = colorizer.colorize_grey(grey, prior=cp.ColourPrior(cp.prior_bias(hists[j], prior, s), g))
            d = cp.histogram_distance(cp.photo_histogram(rgb, bins), hists[j])
            acc.setdefault((ref, s, g), []).append((psnr(rgb, true) - g_psnr, colourfulness(rgb), cf_orig, d))
    rows = []
    print(f"{args.data}: {len(names)} photos, model {args.model}")
    print(f"{'ref':<6} {'s':>4} {'gain':>5} {'dB':>6} {'CF %':>6} {'hist TV':>8}")
    for (ref, s, g), v in sorted(acc.items()):
        a = np.array(v)
        row = dict(ref=ref, temperature=colorizer.decode.temperature, strength=s, gain=g, psnr_gain=float(a[:, 0].mean()),
                   cf_ratio=float(a[:, 1].mean() / a[:, 2].mean()), hist_tv=float(a[:, 3].mean()))
        rows.append(row)
        print(f"{ref:<6} {s:>4.1f} {g:>5.2f} {row['psnr_gain']:>+6.2f} {100 * row['cf_ratio']:>6.0f} {row['hist_tv']:>8.3f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "photos": len(names), "model": args.model, "grid": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
