"""How far to trust the predicted colour prior, photo by photo: a gate on the entropy of the predicted histogram
(issue 28: "a lookup whose trust is decided per photo and learned").

python -m experiments.predicted_prior_gate --predictor P.npz [--strength 0.6] [--correction 0.1]

The predicted prior (memory.Predictor at s, c: experiments/predicted_prior_study.py) gains on val/general and
loses on val/bsds and Kodak, and across photos its gain falls as the predicted histogram's entropy rises (an
unsure prediction is a flat average that only mutes). The gate scales the bias by sigmoid((t - H) / w), H that
entropy. For every photo of val/general, the held-out landscapes, val/bsds and Kodak: H, and the PSNR and
colourfulness at gate values 0, 0.5 and 1 (interpolated between). (t, w) is chosen on val/general alone, the
largest mean PSNR gain whose mean colourfulness is at least the automatic decode's; the other sets are read off.
Writes predicted_prior_gate_s<s>_c<c>.json and its rows to --out.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness, psnr
from experiments.memory_study import save_study
from experiments.predicted_prior_study import evaluation_sets
from experiments.predictor_features import joint_input, network_colours
from memory import PREDICTOR_CORRECTION, PREDICTOR_STRENGTH, Predictor, entropy

LEVELS = np.array([0.0, 0.5, 1.0])
THRESHOLDS = np.round(np.arange(2.4, 3.31, 0.05), 2)
WIDTHS = (0.02, 0.05, 0.1, 0.2)


def predictor_input(colorizer: Colorizer, grey: np.ndarray, inputs: str) -> np.ndarray:
    """What the predictor reads: the embedding, or (inputs "embedding+network") the embedding and the square
    roots of the network's own colours (its probabilities without a prior, averaged over the pixels)."""
    raw, net = network_colours(colorizer, grey)
    return raw if inputs == "embedding" else joint_input(raw, net)


def score(colorizer: Colorizer, predictor: Predictor, path: str, s: float, c: float,
          inputs: str = "embedding") -> dict:
    with Image.open(path) as im:
        true = np.asarray(im.convert("RGB"))
    grey = np.asarray(Image.fromarray(true).convert("L"))
    x = predictor_input(colorizer, grey, inputs)
    bias = predictor.bias(x, colorizer.prior, s, c)
    row = {"path": path, "entropy": float(entropy(predictor.predict(x))), "psnr": [], "cf": []}
    for level in LEVELS:
        rgb = colorizer.colorize_grey(grey, prior=cp.ColourPrior(level * bias) if level else None)
        row["psnr"].append(psnr(rgb, true))
        row["cf"].append(colourfulness(rgb))
    return row


def gated(rows: list[dict], t: float, w: float) -> tuple[float, float]:
    """Mean PSNR gain over the ungated automatic decode and mean colourfulness change, under the gate (t, w)."""
    g = 1 / (1 + np.exp(-(t - np.array([r["entropy"] for r in rows])) / w))
    dp = [np.interp(x, LEVELS, r["psnr"]) - r["psnr"][0] for x, r in zip(g, rows)]
    dc = [np.interp(x, LEVELS, r["cf"]) - r["cf"][0] for x, r in zip(g, rows)]
    return float(np.mean(dp)), float(np.mean(dc))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--strength", type=float, default=PREDICTOR_STRENGTH)
    ap.add_argument("--correction", type=float, default=PREDICTOR_CORRECTION)
    ap.add_argument("--holdout", type=int, default=150)
    ap.add_argument("--inputs", choices=("embedding", "embedding+network"), default="embedding",
                    help="what the predictor was fitted on (experiments/predictor_inputs.py)")
    ap.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    args = ap.parse_args(argv)
    colorizer, predictor = Colorizer.from_checkpoint(args.model), Predictor.load(args.predictor)
    sets = evaluation_sets(args.holdout)
    rows = {}
    for name, ps in sets.items():
        rows[name] = [score(colorizer, predictor, p, args.strength, args.correction, args.inputs) for p in ps]
        print(f"scored {name}: {len(ps)} photos", flush=True)
    grid = [(t, w, *gated(rows["val_general"], t, w)) for t in THRESHOLDS for w in WIDTHS]
    ok = [g for g in grid if g[3] >= 0]
    # none keeps the colour: the one that loses least of it (export_model.choose's fallback)
    t, w, _, _ = max(ok, key=lambda g: g[2]) if ok else max(grid, key=lambda g: g[3])
    result = {"strength": args.strength, "correction": args.correction, "chosen": {"threshold": t, "width": w},
              "colour_kept": bool(ok), "sets": {}}
    print(f"gate chosen on val/general: t {t:g}, w {w:g}" + ("" if ok else " (no gate kept the colour)"))
    for name, rs in rows.items():
        ungated, cf_ungated = gated(rs, 1e9, 1.0)
        gain, dcf = gated(rs, t, w)
        cf_orig = np.mean([colourfulness(np.asarray(Image.open(r["path"]).convert("RGB"))) for r in rs])
        result["sets"][name] = {"ungated_vs_auto_db": ungated, "gated_vs_auto_db": gain,
                                "ungated_cf_points": 100 * cf_ungated / cf_orig, "gated_cf_points": 100 * dcf / cf_orig,
                                "share_on": float(np.mean([r["entropy"] < t for r in rs]))}
        print(f"  {name:<19} ungated {ungated:+.2f} dB {100 * cf_ungated / cf_orig:+.1f} points; gated "
              f"{gain:+.2f} dB {100 * dcf / cf_orig:+.1f} points ({result['sets'][name]['share_on']:.0%} below t)")
    name = f"predicted_prior_gate_s{args.strength:g}_c{args.correction:g}" + (
        "" if args.inputs == "embedding" else "_" + args.inputs.replace("+", "_"))
    save_study(args.out, name, {**result, "grid": grid}, rows, name + "_rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
