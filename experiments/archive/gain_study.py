"""Do saturating or per-photo colour gains beat the centred gain? A decode study for regression heads.

python -m experiments.archive.gain_study --model runs/lite0_mse_long/colorizer_last.pt \
    --images ../shared/data/val/general --min-cf 0.6438 --check ../shared/data/val/bsds

The centred gain (model.decode's gain) stretches every pixel's distance r = |ab - mu| from the image's
mean colour by the same factor k, so photos the network is already sure of (vivid predictions) are
stretched as much as unsure, washed-out ones. The soft cap stretches small distances by k and large
ones less: r' = r k / (1 + (k - 1) r / r0), which is k r for r << r0, r at r = r0, and never above
r0 k / (k - 1). r and r0 are in the network's normalised ab units (ab / 110). The per-photo gain stretches
a photo by less the more spread its prediction already has: k (0.15 / s)^alpha, s the root mean square of
r over the photo (alpha 0: the centred gain; 1: every photo gets the same spread, 0.15 k). It has since
become a decode knob of every model, model.Decode's evenness (= alpha), and this study uses it.

Every decode is scored as export_model.py scores its grid (evaluate.evaluate, the checkpoint's network
size). The rule that chose the shipped settings picks among them on --images: the most accurate decode
at least --min-cf as colourful as the originals. The pick and the plain gain the checkpoint stores are
then scored on each --check folder too.
"""
from __future__ import annotations

import argparse
import sys

import torch

from colorizer import Colorizer
from dataset import find_images
from evaluate import evaluate
from export_model import choose


def _about_mean(ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ab (B,2,H,W) -> each image's mean ab (B,2,1,1) and the offsets from it."""
    mu = ab.mean((2, 3), keepdim=True)
    return mu, ab - mu


def soft_cap(ab: torch.Tensor, k: float, r0: float) -> torch.Tensor:
    """Normalised ab (B,2,H,W) -> the same, each pixel's offset from its image's mean ab stretched by
    k / (1 + (k - 1) |offset| / r0)."""
    mu, d = _about_mean(ab)
    r = d.norm(dim=1, keepdim=True)
    return mu + d * (k / (1 + (k - 1) * r / r0))


def colorizer_with(base: Colorizer, family: str, k: float, x: float) -> Colorizer:
    """A colorizer of base's network and size decoding with the centred gain k ("gain"), the soft cap
    ("cap", r0 = x) or the per-photo gain ("photo", alpha = x)."""
    if family == "gain":
        return Colorizer(base.model, base.size, base.decode.override(gain=k))
    if family == "photo":  # now a decode knob of every model (model.Decode.evenness)
        return Colorizer(base.model, base.size, base.decode.override(gain=k, evenness=x))
    decoded = _Decoded(base.model, lambda out, settings: soft_cap(base.model.decode(out, settings), k, x))
    return Colorizer(decoded, base.size, base.decode.override(gain=1.0))  # its own gain stays 1


class _Decoded(torch.nn.Module):
    """net, with its decode replaced."""

    def __init__(self, net: torch.nn.Module, decode):
        super().__init__()
        self.net, self.decode, self.cfg = net, decode, net.cfg

    def forward(self, *args):
        return self.net(*args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--images", default="../shared/data/val/general")
    p.add_argument("--gains", default="1.2,1.25,1.3", help="centred gains k, for reference")
    p.add_argument("--caps", default="1.5,0.3;1.8,0.3;2.1,0.3;1.5,0.5;1.8,0.5;2.1,0.5", help="k,r0 pairs")
    p.add_argument("--photo", default="1.0,0.3;1.05,0.3;0.8,0.6;0.85,0.6;0.64,1;0.68,1",
                   help="k,alpha pairs of the per-photo gain")
    p.add_argument("--min-cf", type=float, default=0.6438)
    p.add_argument("--check", nargs="*", default=[], help="folders to score the pick and the stored gain on")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Colorizer.from_checkpoint(args.model)
    if base.model.cfg.head != "regression":
        p.error("this study is for regression heads")
    decodes = [("gain", float(k), 0.0) for k in args.gains.split(",") if k]
    for family, pairs in (("cap", args.caps), ("photo", args.photo)):
        decodes += [(family, *map(float, pair.split(","))) for pair in pairs.split(";") if pair]
    paths = find_images(args.images)
    print(f"{args.model} on {len(paths)} photos of {args.images}, network at {base.size} px")
    print("| decode | PSNR gain over grey | colourfulness share | AuC |\n|---|---|---|---|")
    scored = []
    names = {"gain": "centred gain {k}", "cap": "soft cap k {k}, r0 {x}",
             "photo": "per-photo gain k {k}, alpha {x}"}
    for family, k, x in decodes:
        m = evaluate(colorizer_with(base, family, k, x), paths, progress=False)["mean"]
        scored.append({"psnr_gain": m["psnr"] - m["grey_psnr"], "cf_ratio": m["cf_ratio"], "decode": (family, k, x)})
        name = names[family].format(k=k, x=x)
        print(f"| {name} | {scored[-1]['psnr_gain']:+.3f} dB | {100 * m['cf_ratio']:.2f}% | {m['auc']:.3f} |",
              flush=True)
    pick = choose(scored, args.min_cf)[0]["decode"]
    print(f"pick: {names[pick[0]].format(k=pick[1], x=pick[2])}")
    for folder in args.check:
        check = find_images(folder)
        for name, decode in (("pick", pick), ("stored gain", ("gain", base.decode.gain, 0.0))):
            m = evaluate(colorizer_with(base, *decode), check, progress=False)["mean"]
            label = names[decode[0]].format(k=decode[1], x=decode[2])
            print(f"{folder}, {name} ({label}): PSNR gain {m['psnr'] - m['grey_psnr']:+.3f} dB, "
                  f"colourfulness {100 * m['cf_ratio']:.1f}%, AuC {m['auc']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
