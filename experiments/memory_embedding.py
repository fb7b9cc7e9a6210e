"""Looked up or predicted? Which colour prior, from a grey photo's pooled encoder features, best matches its
true colours, and which gains most when decoded (issue 28, "the embedding that finds photos alike in colour").

python -m experiments.memory_embedding --cache DIR [DIR ...] [--fit 300] [--val 150] [--holdout 150]

The split is memory_study's: the cached photos (experiments.memory_features) less the held-out landscapes and a
seeded fit set form the bank; the fit set, val/general and the held-out landscapes are scored. Candidates, each
giving a histogram h over the model's bins for a grey photo:
  retrieval_pca     the shipped memory.Bank: K nearest by cosine in the top principal axes of the features
  retrieval_colour  the same lookup in a colour-aware space: the axes of a ridge regression from the features to
                    the square-rooted histograms (reduced-rank regression), so that near means alike in colour
  retrieval_network the bank photos whose true histograms are nearest (Hellinger) the network's own
  predicted         memory.Predictor: that ridge regression's own answer, squared and normalised (no bank)
Part 1 (no decoding): total variation distance of h to the photo's true histogram, beside the bank mean, the
network's own colours and the nearest bank photo in colour (an oracle). Part 2: the decode with bias
s (log h - log p) for s on memory_study's grid: PSNR gain over grey and colourfulness per set; the strength is
chosen on the fit set and read off on val/general and the landscapes (the two-folder rule).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

import colour_prior as cp
from colorizer import DEFAULT_MODEL, Colorizer
from evaluate import colourfulness, psnr
from experiments.memory_retrieval import tv
from experiments.memory_study import STRENGTHS, TRAIN, VAL, held_out, load_cache, photos, save_study, spaced
from memory import Bank, Predictor, _unit

LAMBDAS = (10.0, 100.0, 1000.0, 10000.0)


def colour_bank(bank: Bank, predictor: Predictor, raw: np.ndarray, dims: int) -> Bank:
    """The bank's photos embedded in the predictor's top `dims` output axes (a reduced-rank regression)."""
    z = (raw - predictor.mean) / predictor.std
    fitted = z @ predictor.weights
    _, _, vt = np.linalg.svd(fitted - fitted.mean(0), full_matrices=False)
    projection = (predictor.weights @ vt[:dims].T).astype(np.float32)
    return Bank(_unit(z @ projection).astype(np.float16), bank.hists, predictor.mean, predictor.std, projection,
                bank.bins, k=bank.k, tau=bank.tau)


def network_keyed(bank_hists: np.ndarray, net_hist: np.ndarray, k: int) -> np.ndarray:
    """The mean true histogram of the k bank photos nearest (Hellinger) to the network's own histogram."""
    sim = np.sqrt(bank_hists) @ np.sqrt(net_hist)
    return bank_hists[np.argpartition(-sim, k - 1)[:k]].mean(0)


def candidates(raw, net_hist, banks: dict, predictor: Predictor, bank_hists: np.ndarray, k: int) -> dict:
    return {"retrieval_pca": banks["pca"].lookup(raw, net_hist).hist,
            "retrieval_colour": banks["colour"].lookup(raw, net_hist).hist,
            "retrieval_network": network_keyed(bank_hists, net_hist, k),
            "predicted": predictor.predict(raw)}


def score(colorizer: Colorizer, path: str, hists_of) -> dict:
    """One photo: each candidate's TV to the truth and its PSNR gain / colourfulness along the strength grid."""
    with Image.open(path) as im:
        true = np.asarray(im.convert("RGB"))
    grey = np.asarray(Image.fromarray(true).convert("L"))
    out = colorizer.run(colorizer.network_input(grey), outputs=("embedding", "probs"))
    net_hist = out["probs"][0].mean((1, 2))
    truth = cp.photo_histogram(true, colorizer.bins)
    g = psnr(np.repeat(grey[..., None], 3, -1), true)
    auto = colorizer.colorize_grey(grey)
    row = {"path": path, "cf_orig": colourfulness(true), "auto": [psnr(auto, true) - g, colourfulness(auto)],
           "tv": {"network": float(tv(net_hist / net_hist.sum(), truth))}, "gain": {}, "cf": {}}
    for name, h in hists_of(out["embedding"][0], net_hist).items():
        row["tv"][name] = float(tv(h, truth))
        gains, cfs = [row["auto"][0]], [row["auto"][1]]
        for s in STRENGTHS[1:]:
            rgb = colorizer.colorize_grey(grey, prior=cp.ColourPrior(cp.prior_bias(h, colorizer.prior, s)))
            gains.append(psnr(rgb, true) - g)
            cfs.append(colourfulness(rgb))
        row["gain"][name], row["cf"][name] = gains, cfs
    return row


def retrieval_table(raw, hists, bank_idx, query_idx, bins, k, tau) -> dict:
    """Part 1 on cached photos: TV of every candidate to the truth, lambda of the ridge swept."""
    rb, hb, rq, hq = raw[bank_idx], hists[bank_idx], raw[query_idx], hists[query_idx]
    out = {"bank_mean": float(tv(hb.mean(0), hq).mean()),
           "oracle_nearest_in_colour": float(np.mean([tv(h, hb).min() for h in hq]))}
    pca = Bank.build(rb, hb, bins)
    pca.k, pca.tau = k, tau
    out["retrieval_pca"] = float(np.mean([tv(pca.lookup(r, h).hist, h) for r, h in zip(rq, hq)]))
    for lam in LAMBDAS:
        pred = Predictor.fit(rb, hb, bins, lam)
        out[f"predicted_lambda{lam:g}"] = float(tv(pred.predict(rq), hq).mean())
        col = colour_bank(pca, pred, rb, pca.embeddings.shape[1])
        out[f"retrieval_colour_lambda{lam:g}"] = float(np.mean([tv(col.lookup(r, h).hist, h) for r, h in zip(rq, hq)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", nargs="+", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--fit", type=int, default=300)
    ap.add_argument("--val", type=int, default=150)
    ap.add_argument("--holdout", type=int, default=150)
    ap.add_argument("--queries", type=int, default=1000, help="cached photos held out for part 1")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.model)
    bins = colorizer.bins
    parts = [load_cache(c) for c in args.cache]
    raw = np.concatenate([p[0] for p in parts]).astype(np.float64)
    hists = np.concatenate([p[1] for p in parts]).astype(np.float64)
    hists /= hists.sum(1, keepdims=True)
    paths = [x for p in parts for x in p[2]]
    rel = [os.path.relpath(p, TRAIN) for p in paths]
    held = set(held_out())
    rest = [i for i, r in enumerate(rel) if r not in held]
    readable = [i for i in rest if os.path.exists(paths[i])]
    fit_idx = set(np.random.default_rng(0).choice(readable, args.fit, replace=False).tolist())
    bank_idx = np.array([i for i in rest if i not in fit_idx])

    # Part 1: retrieval against prediction on cached photos, queries held out of a sub-bank
    q = np.random.default_rng(1).choice(len(bank_idx), args.queries, replace=False)
    table = retrieval_table(raw, hists, np.delete(bank_idx, q), bank_idx[q], bins, args.k, args.tau)
    lam = min(LAMBDAS, key=lambda x: table[f"predicted_lambda{x:g}"])
    for name, v in table.items():
        print(f"  {name:<32} TV {v:.3f}", flush=True)

    # Part 2: decoded, on the fit set, val/general and the held-out landscapes
    pca = Bank.build(raw[bank_idx], hists[bank_idx], bins)
    pca.k, pca.tau = args.k, args.tau
    predictor = Predictor.fit(raw[bank_idx], hists[bank_idx], bins, lam)
    banks = {"pca": pca, "colour": colour_bank(pca, predictor, raw[bank_idx], pca.embeddings.shape[1])}
    bank_hists = hists[bank_idx]
    hists_of = lambda r, n: candidates(r, n, banks, predictor, bank_hists, args.k)  # noqa: E731
    val = photos(VAL)
    sets = {"fit": [paths[i] for i in sorted(fit_idx)],
            "val_general": spaced(val, args.val),
            "holdout_landscapes": spaced([os.path.join(TRAIN, h) for h in sorted(held)], args.holdout)}
    rows = {}
    for name, ps in sets.items():
        rows[name] = [score(colorizer, p, hists_of) for p in ps]
        print(f"scored {name}: {len(ps)} photos", flush=True)
    result = {"bank": len(bank_idx), "k": args.k, "tau": args.tau, "lambda": lam, "strengths": STRENGTHS.tolist(),
              "tv_cached_queries": table, "sets": {}}
    names = list(rows["fit"][0]["gain"])
    chosen = {n: int(np.argmax(np.mean([r["gain"][n] for r in rows["fit"]], 0))) for n in names}
    for set_name, rs in rows.items():
        cf_orig = np.mean([r["cf_orig"] for r in rs])
        s = {"auto": {"psnr_gain": float(np.mean([r["auto"][0] for r in rs])),
                      "cf_ratio": float(np.mean([r["auto"][1] for r in rs]) / cf_orig)},
             "tv": {n: float(np.mean([r["tv"][n] for r in rs])) for n in ["network"] + names}}
        for n in names:
            i = chosen[n]
            s[n] = {"strength": float(STRENGTHS[i]), "psnr_gain": float(np.mean([r["gain"][n][i] for r in rs])),
                    "cf_ratio": float(np.mean([r["cf"][n][i] for r in rs]) / cf_orig),
                    "by_strength": [float(np.mean([r["gain"][n][j] for r in rs])) for j in range(len(STRENGTHS))]}
        result["sets"][set_name] = s
        print(set_name, f"auto {s['auto']['psnr_gain']:+.2f} dB {100 * s['auto']['cf_ratio']:.0f}%;",
              "; ".join(f"{n} s={s[n]['strength']:g} {s[n]['psnr_gain']:+.2f} dB {100 * s[n]['cf_ratio']:.0f}% "
                        f"TV {s['tv'][n]:.3f}" for n in names), flush=True)
    save_study(args.out, "embedding_study", result, rows, "embedding_rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
