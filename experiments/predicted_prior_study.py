"""The predicted colour prior's setting: strength s and centred gain, chosen on val/general by v2's kind of rule
(the most accurate setting at least as colourful as the automatic decode), read off on the held-out landscapes
(the two-folder rule), with val/bsds and Kodak shown beside (issue 28).

python -m experiments.predicted_prior_study (--cache DIR [DIR ...] | --predictor NPZ) [--strengths ...] [--gains ...]
    [--corrections ...]

memory.Predictor is fitted on every cached photo (experiments.memory_features) except the held-out landscapes,
or read from a file (build_memory.py --predictor);
each scored photo's grey gives the network's embedding, the predictor's histogram h, and the decode with bias
s (log h - log p) - c log p and the centred gain. Writes predicted_prior_study.json (per set and setting: PSNR gain over grey,
colourfulness as a share of the originals') to --out.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness, psnr
from experiments.memory_study import TRAIN, VAL, held_out, load_cache, photos, spaced
from memory import LAMBDA, Predictor

SETS = {"val_general": VAL, "val_bsds": os.path.join("..", "shared", "data", "val", "bsds"),
        "kodak": os.path.join("..", "shared", "data", "bench", "kodak")}


def evaluation_sets(holdout: int | None = None) -> dict[str, list[str]]:
    """The sets the prior studies score, in order: val/general, the held-out landscapes (`holdout` of them,
    evenly spaced; None: all 300), val/bsds and Kodak."""
    held = [os.path.join(TRAIN, h) for h in held_out()]
    return {"val_general": photos(VAL), "holdout_landscapes": spaced(held, holdout or len(held)),
            "val_bsds": photos(SETS["val_bsds"]), "kodak": photos(SETS["kodak"])}


def score(colorizer: Colorizer, predictor: Predictor, path: str, settings: list[tuple[float, float, float]]) -> dict:
    with Image.open(path) as im:
        true = np.asarray(im.convert("RGB"))
    grey = np.asarray(Image.fromarray(true).convert("L"))
    emb = colorizer.run(colorizer.network_input(grey), outputs=("embedding",))["embedding"][0]
    g = psnr(np.repeat(grey[..., None], 3, -1), true)
    row = {"path": path, "cf_orig": colourfulness(true), "gain": [], "cf": []}
    for s, gain, c in settings:
        prior = None if s == c == 0 and gain == 1 else cp.ColourPrior(predictor.bias(emb, colorizer.prior, s, c), gain)
        rgb = colorizer.colorize_grey(grey, prior=prior)
        row["gain"].append(psnr(rgb, true) - g)
        row["cf"].append(colourfulness(rgb))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", nargs="+")
    src.add_argument("--predictor", help="a fitted predictor (build_memory.py --predictor) instead of --cache")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0, 1.2])
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 1.15, 1.3])
    ap.add_argument("--corrections", type=float, nargs="+", default=[0.0],
                    help="c: bias - c log p, more of the rare colours (a colour knob beside the gain)")
    ap.add_argument("--name", default="predicted_prior_study")
    ap.add_argument("--lam", type=float, default=LAMBDA)
    ap.add_argument("--holdout", type=int, default=150)
    ap.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.model)
    held = held_out()
    if args.predictor:
        predictor, fitted_on = Predictor.load(args.predictor), args.predictor
    else:
        parts = [load_cache(c) for c in args.cache]
        raw, hists = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        keep = np.array([os.path.relpath(x, TRAIN) not in set(held) for p in parts for x in p[2]])
        predictor, fitted_on = Predictor.fit(raw[keep], hists[keep], colorizer.bins, args.lam), int(keep.sum())
    print(f"predictor: {fitted_on}", flush=True)
    settings = [(0.0, 1.0, 0.0)] + [(s, g, c) for s in args.strengths for g in args.gains for c in args.corrections]
    sets = evaluation_sets(args.holdout)
    result = {"fitted_on": fitted_on, "lambda": args.lam, "settings": settings, "sets": {}}
    for name, ps in sets.items():
        rows = [score(colorizer, predictor, p, settings) for p in ps]
        cf_orig = np.mean([r["cf_orig"] for r in rows])
        result["sets"][name] = {"photos": len(rows),
                                "psnr_gain": np.mean([r["gain"] for r in rows], 0).tolist(),
                                "cf_ratio": (np.mean([r["cf"] for r in rows], 0) / cf_orig).tolist()}
        print(f"scored {name}: {len(rows)} photos", flush=True)
    v = result["sets"]["val_general"]
    ok = [i for i in range(len(settings)) if v["cf_ratio"][i] >= v["cf_ratio"][0]]
    pick = max(ok, key=lambda i: v["psnr_gain"][i])
    result["chosen"] = {"strength": settings[pick][0], "gain": settings[pick][1], "correction": settings[pick][2],
                        "index": pick}
    print("chosen on val/general: s={:g} gain {:g} correction {:g}".format(*settings[pick]))
    for name, s in result["sets"].items():
        print(f"  {name:<19} auto {s['psnr_gain'][0]:+.2f} dB {100 * s['cf_ratio'][0]:.0f}%  chosen "
              f"{s['psnr_gain'][pick]:+.2f} dB {100 * s['cf_ratio'][pick]:.0f}%")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
