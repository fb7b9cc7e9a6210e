"""Is there a better decode than the annealed mean? PSNR gain against colourfulness for two decode families.

python experiments/decode_study.py --model checkpoints/colorizer.pt --images ../shared/data/val/general

1. The annealed mean (model.decode): softmax((logits - c log w) / T) over the ab bins; lower c and T are
   more vivid.
2. The centred chroma gain (model.decode's gain): the posterior mean m (T = 1, c = 1 undoes the
   rebalancing; or another T, c), pushed away from the image's mean colour mu: mu + k (m - mu). For a
   calibrated posterior this is the PSNR-optimal answer under a constraint on the spread of the colours
   (minimise sum |f - m|^2 - lambda sum |f - mean f|^2 over f: f - m = lambda (f - mu), so
   f = mu + (m - mu) / (1 - lambda)), and the spread is what the Hasler-Suesstrunk colourfulness mostly
   measures.

Each decode is scored as export_model.py scores its grid: evaluate.evaluate over the photos, with the
colorizer at the checkpoint's network size.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from colorizer import Colorizer  # noqa: E402
from dataset import find_images  # noqa: E402
from evaluate import evaluate  # noqa: E402
from model import Decode  # noqa: E402


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
    shipped = Colorizer.from_checkpoint(args.model)
    if shipped.model.cfg.head != "classification":
        p.error("the decode knobs exist for a classification head only")
    paths = find_images(args.images)
    print(f"{args.model} on {len(paths)} photos of {args.images}, network at {shipped.size} px")
    print("| decode | PSNR gain over grey | colourfulness share |\n|---|---|---|")
    rows = [(shipped.decode.temperature, float(c), None) for c in args.corrections.split(",")]
    for base in args.bases.split(";"):
        t, c = map(float, base.split(","))
        rows += [(t, c, float(k)) for k in args.gains.split(",")]
    for t, c, k in rows:
        m = evaluate(Colorizer(shipped.model, shipped.size, Decode(t, c, 1.0 if k is None else k)), paths,
                     progress=False)["mean"]
        name = f"annealed mean, T {t}, c {c}" if k is None else f"centred gain {k} on T {t}, c {c}"
        print(f"| {name} | {m['psnr'] - m['grey_psnr']:+.2f} dB | {100 * m['cf_ratio']:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
