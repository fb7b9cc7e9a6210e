"""How strongly should a reference photo's colours steer the decode? A grid over strength s and temperature T.

python -m experiments.reference_study [--data DIR] [--limit N] [--out JSON]

For each photo: the network runs once; then, for every (s, T), the decode adds s (log h - log p) to the
calibrated logits (colour_prior.prior_bias), h the histogram of (a) the photo's own original ("self", the
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
import torch
import torch.nn.functional as F
from PIL import Image

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer, _downscale, _grey_to_l
from evaluate import colourfulness, psnr
from model import Decode
from utils import IMAGE_EXTENSIONS, prior_from_weights

STRENGTHS = (0.0, 0.3, 0.5, 0.7, 1.0, 1.5)
TEMPERATURES = (0.55, 0.45, 0.38)
GAINS = (1.0,)


def kind(name: str) -> str:
    """val/general names are <set>_<name>: the set is the kind; elsewhere the whole folder is one kind."""
    return name.split("_", 1)[0] if "_" in name else ""


def other_index(names: list[str], seed: int = 0) -> list[int]:
    """For each photo, a seeded different photo of the same kind (the reference a user would have)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(names):
        pool = [j for j, m in enumerate(names) if j != i and kind(m) == kind(n)]
        out.append(int(rng.choice(pool)))
    return out


@torch.inference_mode()
def logits(colorizer: Colorizer, grey: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = grey.shape
    nw, nh = colorizer.net_size(w, h)
    l_small = _grey_to_l(_downscale(grey, (nw, nh)))[None, None]
    return colorizer.model(colorizer.norm.l(l_small)), (nh, nw)


@torch.inference_mode()
def decode(colorizer: Colorizer, out: torch.Tensor, size, settings: Decode, bias: np.ndarray | None):
    b = None if bias is None else torch.from_numpy(bias)[None]
    ab_n = F.interpolate(colorizer.model.decode(out, settings, b), size=size, mode="bilinear", align_corners=False)
    return colorizer.norm.ab_inv(ab_n).float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "val", "general"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, default=0, help="N photos evenly spaced over the sorted names; 0: all")
    ap.add_argument("--out", default=None, help="write the grid as JSON here")
    ap.add_argument("--strengths", type=float, nargs="+", default=STRENGTHS)
    ap.add_argument("--temperatures", type=float, nargs="+", default=TEMPERATURES)
    ap.add_argument("--gains", type=float, nargs="+", default=GAINS, help="centred colour gain (model.Decode)")
    ap.add_argument("--refs", nargs="+", default=["self", "other"], choices=["self", "other"])
    args = ap.parse_args(argv)
    names = sorted(n for n in os.listdir(args.data) if n.lower().endswith(IMAGE_EXTENSIONS))
    if args.limit and args.limit < len(names):
        names = [names[i] for i in np.linspace(0, len(names) - 1, args.limit).round().astype(int)]
    colorizer = Colorizer.from_checkpoint(args.model)
    model = colorizer.model
    bins = model.bins.numpy().astype(np.float64)
    prior = prior_from_weights(model.log_weights, 0.5).numpy()  # the shipped model's lambda
    trues = [np.asarray(Image.open(os.path.join(args.data, n)).convert("RGB")) for n in names]
    hists = [cp.photo_histogram(t, bins) for t in trues]
    others = other_index(names)
    acc: dict[tuple, list] = {}
    for i, true in enumerate(trues):
        grey = np.asarray(Image.fromarray(true).convert("L"))
        out, size = logits(colorizer, grey)
        g_psnr, cf_orig = psnr(np.repeat(grey[..., None], 3, -1), true), colourfulness(true)
        refs = {"self": i, "other": others[i]}
        for ref, T, s, g in itertools.product(args.refs, args.temperatures, args.strengths, args.gains):
            j = refs[ref]
            settings = colorizer.decode.override(temperature=T, gain=g)
            bias = cp.prior_bias(hists[j], prior, s) if s else None
            rgb = colorizer.colorize_grey_with_ab(grey, decode(colorizer, out, size, settings, bias))
            d = cp.histogram_distance(cp.photo_histogram(rgb, bins), hists[j])
            acc.setdefault((ref, T, s, g), []).append((psnr(rgb, true) - g_psnr, colourfulness(rgb), cf_orig, d))
    rows = []
    print(f"{args.data}: {len(names)} photos, model {args.model}")
    print(f"{'ref':<6} {'T':>5} {'s':>4} {'gain':>5} {'dB':>6} {'CF %':>6} {'hist TV':>8}")
    for (ref, T, s, g), v in sorted(acc.items()):
        a = np.array(v)
        row = dict(ref=ref, temperature=T, strength=s, gain=g, psnr_gain=float(a[:, 0].mean()),
                   cf_ratio=float(a[:, 1].mean() / a[:, 2].mean()), hist_tv=float(a[:, 3].mean()))
        rows.append(row)
        print(f"{ref:<6} {T:>5.2f} {s:>4.1f} {g:>5.2f} {row['psnr_gain']:>+6.2f} {100 * row['cf_ratio']:>6.0f} {row['hist_tv']:>8.3f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "photos": len(names), "model": args.model, "grid": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
