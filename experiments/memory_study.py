"""Colour memory: does a looked-up colour prior help, and can its trust be learned? (issue 28)

python -m experiments.memory_study --cache /work/memory_cache/train [--fit 400] [--out DIR]

Splits the cached training photos (experiments.memory_features) into a bank, a set held out from the bank to
learn the trust on (--fit photos, seeded), and the held-out landscapes of experiments/results/holdout (never in
the bank). For every photo scored: the network runs once; the bank lookup (memory.Bank) gives a histogram h;
the decode adds s (log h - log p) for s on a grid; PSNR and colourfulness are recorded per s. The trust
(memory.Trust) is fitted on the fit set to maximise the mean PSNR gain (s interpolated on the grid), then
scored on val/general and the held-out landscapes beside the automatic decode and every fixed s.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
from PIL import Image
from scipy.optimize import minimize

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness, psnr
from build_memory import raw_embedding
from image_io import INPUT_EXTENSIONS as IMAGE_EXTENSIONS
from memory import K, TAU, TRUST_FEATURES, Bank, Trust

STRENGTHS = np.array([0.0, 0.15, 0.3, 0.45, 0.6, 0.8])
TRAIN = os.path.join("..", "shared", "data", "train")
VAL = os.path.join("..", "shared", "data", "val", "general")
HOLDOUT = os.path.join("experiments", "results", "holdout", "select.txt")


def spaced(items: list, n: int) -> list:
    """n items evenly spaced over the list (all if n >= its length)."""
    return items if n >= len(items) else [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def held_out() -> list[str]:
    """The held-out landscapes (HOLDOUT, kept out of v2's training): their paths relative to TRAIN, sorted."""
    with open(HOLDOUT) as f:
        return sorted(line.strip() for line in f if line.strip() and not line.startswith("#"))


def photos(folder: str) -> list[str]:
    """The photos directly in folder, sorted."""
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTENSIONS))


def save_json(out: str, name: str, result: dict) -> None:
    """A study's summary as out/name.json (out made if missing)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)


def save_study(out: str, name: str, result: dict, rows: dict[str, list[dict]], rows_name: str) -> None:
    """A study's summary as out/name.json and its per-photo rows (by set) as out/rows_name.jsonl."""
    save_json(out, name, result)
    with open(os.path.join(out, rows_name + ".jsonl"), "w") as f:
        for set_name, rs in rows.items():
            for row in rs:
                f.write(json.dumps({"set": set_name, **row}) + "\n")


def load_cache(cache: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    parts = [np.load(p) for p in sorted(glob.glob(os.path.join(cache, "chunk_*.npz")))]
    return (np.concatenate([p["raw"] for p in parts]), np.concatenate([p["hists"] for p in parts]),
            [str(x) for p in parts for x in p["paths"]])


def score_photo(colorizer, bank: Bank, prior: np.ndarray, path: str, exclude=None) -> dict:
    """One photo: the lookup's features and PSNR gain / colourfulness at every strength of the grid."""
    with Image.open(path) as im:
        true = np.asarray(im.convert("RGB"))
    grey = np.asarray(Image.fromarray(true).convert("L"))
    out = colorizer.run(colorizer.network_input(grey), outputs=("embedding", "probs"))
    # the network's own colour distribution: its decoded probabilities averaged over the pixels (Q,)
    look = bank.lookup(out["embedding"][0], out["probs"][0].mean((1, 2)), exclude)
    g = psnr(np.repeat(grey[..., None], 3, -1), true)
    gains, cfs = [], []
    for s in STRENGTHS:
        rgb = colorizer.colorize_grey(grey, prior=cp.ColourPrior(cp.prior_bias(look.hist, prior, s)))
        gains.append(psnr(rgb, true) - g)
        cfs.append(colourfulness(rgb))
    return {"path": path, "features": look.features.tolist(), "gain": gains, "cf": cfs,
            "cf_orig": colourfulness(true)}


def halves(colorizer: Colorizer, folder: str, bins: np.ndarray) -> tuple[Bank, list[str]]:
    """A bank of a seeded half of folder's photos, and the paths of the other half (to colour with it)."""
    paths = photos(folder)
    order = np.random.default_rng(0).permutation(len(paths))
    bank_paths = [paths[i] for i in order[: len(paths) // 2]]
    raws, hists = [], []
    for p in bank_paths:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        raws.append(raw_embedding(colorizer, np.asarray(Image.fromarray(rgb).convert("L"))))
        hists.append(cp.photo_histogram(rgb, bins))
    return Bank.build(np.stack(raws), np.stack(hists), bins), [paths[i] for i in order[len(paths) // 2:]]


def at_strength(rows: list[dict], s: np.ndarray, key: str) -> np.ndarray:
    """Each row's `key` at its own strength s (linear interpolation on the grid)."""
    return np.array([np.interp(si, STRENGTHS, r[key]) for r, si in zip(rows, s)])


def fit_trust(rows: list[dict], max_strength: float = float(STRENGTHS[-1]), l2: float = 0.01) -> Trust:
    """The trust that maximises the fit set's mean PSNR gain (minus a small L2 penalty on its weights)."""
    f = np.array([r["features"] for r in rows])
    mean, std = f.mean(0), f.std(0) + 1e-9
    trust = Trust(mean=mean, std=std, max_strength=max_strength)

    def loss(theta):
        trust.weights, trust.bias = theta[:-1], theta[-1]
        s = np.array([trust.strength(x) for x in f])
        return -at_strength(rows, s, "gain").mean() + l2 * (theta[:-1] ** 2).sum()

    best = min((minimize(loss, np.r_[np.zeros(f.shape[1]), b0], method="Nelder-Mead",
                         options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-6}) for b0 in (-2.0, 0.0)),
               key=lambda r: r.fun)
    trust.weights, trust.bias = best.x[:-1], float(best.x[-1])
    return trust


def summary(rows: list[dict], trust: Trust) -> dict:
    cf_orig = np.mean([r["cf_orig"] for r in rows])
    out = {f"s={s:g}": {"psnr_gain": float(np.mean([r["gain"][i] for r in rows])),
                        "cf_ratio": float(np.mean([r["cf"][i] for r in rows]) / cf_orig)}
           for i, s in enumerate(STRENGTHS)}
    s = np.array([trust.strength(np.array(r["features"])) for r in rows])
    out["trust"] = {"psnr_gain": float(at_strength(rows, s, "gain").mean()),
                    "cf_ratio": float(at_strength(rows, s, "cf").mean() / cf_orig), "mean_strength": float(s.mean())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", nargs="+", required=True, help="memory_features caches (the bank and the fit set)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--fit", type=int, default=400)
    ap.add_argument("--val", type=int, default=150, help="val/general photos scored (evenly spaced)")
    ap.add_argument("--holdout", type=int, default=300, help="held-out landscapes scored (evenly spaced)")
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--tau", type=float, default=TAU)
    ap.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    ap.add_argument("--trust", default=None, help="a study JSON whose fitted trust to use: scores --halves only")
    ap.add_argument("--halves", nargs="*", default=[], metavar="FOLDER",
                    help="same-kind memory: for each folder, a bank of a seeded half of its photos (with the trust "
                         "fitted here) colours the other half")
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.model)
    prior, bins = colorizer.prior, colorizer.bins
    parts = [load_cache(c) for c in args.cache]
    raw, hists = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    paths = [x for p in parts for x in p[2]]
    rel = [os.path.relpath(p, TRAIN) for p in paths]
    held = set(held_out())
    rest = [i for i, r in enumerate(rel) if r not in held]
    readable = [i for i in rest if os.path.exists(paths[i])]  # the fit set is decoded again
    fit_idx = set(np.random.default_rng(0).choice(readable, args.fit, replace=False).tolist())
    bank_idx = [i for i in rest if i not in fit_idx]
    bank = Bank.build(raw[bank_idx], hists[bank_idx], bins)
    bank.k, bank.tau = args.k, args.tau
    print(f"bank {len(bank_idx)} photos, fit {len(fit_idx)}, held-out landscapes {len(held)}", flush=True)
    val = photos(VAL)
    sets = {"fit": [paths[i] for i in sorted(fit_idx)],
            "holdout_landscapes": spaced([os.path.join(TRAIN, h) for h in sorted(held)], args.holdout),
            "val_general": spaced(val, args.val)}
    if args.trust:
        with open(args.trust) as f:
            trust = Trust.from_arrays(json.load(f)["trust"])
        rows = {}
    else:
        rows = {name: [score_photo(colorizer, bank, prior, p) for p in ps] for name, ps in sets.items()}
        trust = fit_trust(rows["fit"])
    for folder in args.halves:
        half_bank, scored = halves(colorizer, folder, bins)
        half_bank.k, half_bank.tau, half_bank.trust = args.k, args.tau, trust
        rows[f"halves_{os.path.basename(os.path.normpath(folder))}"] = [
            score_photo(colorizer, half_bank, prior, p) for p in scored]
    result = {"bank": len(bank_idx), "k": args.k, "tau": args.tau, "features": TRUST_FEATURES,
              "trust": {k: np.asarray(v).tolist() for k, v in trust.to_arrays().items()},
              "sets": {name: summary(r, trust) for name, r in rows.items()}}
    name = f"study_k{args.k}_tau{args.tau:g}" + ("_halves" if args.trust else "")
    save_study(args.out, name, result, rows, name.replace("study", "rows"))
    for name, s in result["sets"].items():
        print(name, " ".join(f"{k}: {v['psnr_gain']:+.2f} dB {100 * v['cf_ratio']:.0f}%" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
