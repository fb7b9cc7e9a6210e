"""Is there a better decode than the annealed mean? PSNR gain against colourfulness for two decode families.

python experiments/decode_study.py --model checkpoints/colorizer.pt --images ../shared/data/val/general

1. The annealed mean (model.decode): softmax((logits - c log w) / T) over the ab bins; lower c and T are
   more vivid.
2. The centred chroma gain: the posterior mean m (T = 1, c = 1 undoes the rebalancing; or another T, c),
   pushed away from the image's mean colour mu: mu + k (m - mu). For a calibrated posterior this is the
   PSNR-optimal answer under a constraint on the spread of the colours (minimise sum |f - m|^2 - lambda
   sum |f - mean f|^2 over f: f - m = lambda (f - mu), so f = mu + (m - mu) / (1 - lambda)), and
   the spread is what the Hasler-Suesstrunk colourfulness mostly measures.

The network runs once per photo at the checkpoint's size; each decode is then merged with the full-
resolution L exactly as the colorizer does and scored with evaluate.py's PSNR and colourfulness.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from colorizer import Colorizer, _downscale, _grey_to_l  # noqa: E402
from dataset import find_images  # noqa: E402
from evaluate import colourfulness, psnr  # noqa: E402


def network_outputs(col: Colorizer, paths: list[str]) -> list[tuple]:
    """(original RGB, grey, head output in float16, network size) per photo."""
    out = []
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as im:
                true = np.asarray(im.convert("RGB"))
            grey = np.asarray(Image.fromarray(true).convert("L"))
            nw, nh = col.net_size(grey.shape[1], grey.shape[0])
            l_small = _grey_to_l(_downscale(grey, (nw, nh)))[None, None]
            out.append((true, grey, col.model(col.norm.l(l_small)).half(), (nh, nw)))
    return out


def score(col: Colorizer, outputs: list[tuple], temperature: float, correction: float, gain: float | None
          ) -> tuple[float, float]:
    """(mean PSNR gain over grey in dB, colourfulness share of the originals') of one decode; gain None:
    the annealed mean as it is, else the centred chroma gain k."""
    ps, grey_ps, cf, cf_orig = [], [], [], []
    with torch.inference_mode():
        for true, grey, out, size in outputs:
            ab = col.model.decode(out.float(), temperature=temperature, prior_correction=correction)
            if gain is not None:
                mu = ab.mean((2, 3), keepdim=True)
                ab = mu + gain * (ab - mu)
            ab = col.norm.ab_inv(F.interpolate(ab, size=size, mode="bilinear", align_corners=False)).float()
            pred = col.colorize_grey_with_ab(grey, ab)
            ps.append(psnr(pred, true))
            grey_ps.append(psnr(np.repeat(grey[..., None], 3, -1), true))
            cf.append(colourfulness(pred))
            cf_orig.append(colourfulness(true))
    return float(np.mean(ps) - np.mean(grey_ps)), float(np.mean(cf) / np.mean(cf_orig))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/colorizer.pt")
    p.add_argument("--images", default="../shared/data/val/general")
    p.add_argument("--corrections", default="0.35,0.45,0.55", help="annealed mean at the model's T")
    p.add_argument("--gains", default="1.6,1.8,2.0,2.2", help="centred chroma gains k")
    p.add_argument("--bases", default="1,1;0.8,1;1,0.85", help="T,c of the posterior the gain starts from")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    col = Colorizer.from_checkpoint(args.model)
    if col.model.cfg.head != "classification":
        p.error("the decode knobs exist for a classification head only")
    outputs = network_outputs(col, find_images(args.images))
    print(f"{args.model} on {len(outputs)} photos of {args.images}, network at {col.size} px")
    print("| decode | PSNR gain over grey | colourfulness share |\n|---|---|---|")
    rows = [(col.temperature, float(c), None) for c in args.corrections.split(",")]
    for base in args.bases.split(";"):
        t, c = map(float, base.split(","))
        rows += [(t, c, float(k)) for k in args.gains.split(",")]
    for t, c, k in rows:
        gain, cf = score(col, outputs, t, c, k)
        name = f"annealed mean, T {t}, c {c}" if k is None else f"centred gain {k} on T {t}, c {c}"
        print(f"| {name} | {gain:+.2f} dB | {100 * cf:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
