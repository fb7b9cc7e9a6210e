"""A learned trust for the predicted colour prior (issue 28: "a lookup whose trust is decided per photo and
learned, not fixed, on photos held out from the bank").

python -m experiments.predicted_prior_trust score FEATURES.npz [...] --out DIR [--shard I N] [--new N] [--seen N]
python -m experiments.predicted_prior_trust fit DIR [--out RESULTS]

The entropy gate of experiments/predicted_prior_gate.py was chosen on val/general's 300 photos. Here the trust is
learned on thousands of photos that the predictor did not see: the predictor's 16,000 photos
(experiments/predictor_features.py) in 5 folds, each fold's histograms predicted by a predictor fitted on the other
four. `score` decodes every photo once through the network (its probabilities with no prior) and reweights them
for each setting of a grid, pull g (the bias s (log h - log p) at s = g x PREDICTOR_STRENGTH) by correction c
(- c log p): softmax((z + b) / T) = softmax(z / T) exp(b / T), normalised, so the grid costs one network pass.
Per photo it keeps PSNR and colourfulness on the grid and what a trust can read: the prediction's and the
network's colours (the network's mean probabilities), and the embedding. The evaluation sets (val/general, the
held-out landscapes, val/bsds, Kodak) are scored with the predictor fitted on all 16,000 (--predictor).
`fit` learns the pull per photo from those features on the fold-held-out photos, picks c and reports every set.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
from PIL import Image
from scipy.optimize import minimize

from colorizer import DEFAULT_MODEL, Colorizer
from colour_prior import prior_bias
from evaluate import colourfulness, psnr
from experiments.memory_study import save_json, spaced
from experiments.predicted_prior_study import evaluation_sets
from memory import PREDICTOR_CORRECTION, PREDICTOR_GATE, PREDICTOR_STRENGTH, Predictor, entropy

PULLS = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])  # times PREDICTOR_STRENGTH
CORRECTIONS = np.array([0.0, 0.1, 0.2])
FOLDS = 5


def decode_scores(colorizer: Colorizer, grey: np.ndarray, true: np.ndarray, l_small: np.ndarray,
                  weights: np.ndarray) -> tuple[float, float]:
    """PSNR and colourfulness of the photo coloured with the annealed mean of weights (Q, h, w) over the bins
    (unnormalised, >= 0: e.g. the network's probabilities reweighted for another bias), merged as
    Colorizer.colorize_grey does. l_small: colorizer.network_input(grey)."""
    ab = np.einsum("qhw,qc->chw", weights / weights.sum(0, keepdims=True), colorizer.bins)[None]
    rgb = colorizer.colorize_grey_with_ab(grey, colorizer.finish_ab(ab.astype(np.float32), l_small))
    return psnr(rgb, true), colourfulness(rgb)


def grid_scores(colorizer: Colorizer, grey: np.ndarray, true: np.ndarray, l_small: np.ndarray, probs: np.ndarray,
                pull: np.ndarray, log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and colourfulness (len(PULLS), len(CORRECTIONS)) of the decode with bias g pull - c log p, from the
    network's probabilities with no bias (Q, h, w). pull: s (log h - log p) at s = PREDICTOR_STRENGTH."""
    t = colorizer.decode.temperature
    out_p, out_c = np.zeros((len(PULLS), len(CORRECTIONS))), np.zeros((len(PULLS), len(CORRECTIONS)))
    for i, g in enumerate(PULLS):
        for j, c in enumerate(CORRECTIONS):
            b = g * pull - c * log_p
            out_p[i, j], out_c[i, j] = decode_scores(colorizer, grey, true, l_small,
                                                     probs * np.exp((b - b.max()) / t)[:, None, None])
    return out_p, out_c


def oof_predictions(raw: np.ndarray, hists: np.ndarray, bins: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each photo's histogram predicted by a predictor fitted on the other FOLDS - 1 folds."""
    fold = np.random.default_rng(seed).permutation(len(raw)) % FOLDS
    pred = np.zeros_like(hists)
    for k in range(FOLDS):
        pred[fold == k] = Predictor.fit(raw[fold != k], hists[fold != k], bins).predict(raw[fold == k])
    return pred


def score_set(colorizer: Colorizer, items: list[tuple[str, np.ndarray | None]], predictor: Predictor | None,
              out: str) -> None:
    """Score (path, predicted histogram or None: use predictor) items; writes out (npz), resumable by path."""
    done = dict(np.load(out)) if os.path.exists(out) else None
    seen = set(done["paths"].tolist()) if done else set()
    rows = {k: list(v) for k, v in done.items()} if done else {}
    log_p = np.log(np.clip(colorizer.prior.astype(np.float64), 1e-12, None))
    for n, (path, pred) in enumerate(items):
        if path in seen:
            continue
        try:
            with Image.open(path) as im:
                true = np.asarray(im.convert("RGB"))
        except OSError:
            continue
        grey = np.asarray(Image.fromarray(true).convert("L"))
        l_small = colorizer.network_input(grey)
        o = colorizer.run(l_small, bias=np.zeros(len(log_p), np.float32), outputs=("embedding", "probs"))
        probs, emb = o["probs"][0].astype(np.float64), o["embedding"][0]
        if pred is None:
            pred = predictor.predict(emb)
        net = probs.mean((1, 2))
        pull = prior_bias(pred, colorizer.prior, PREDICTOR_STRENGTH).astype(np.float64)
        p, c = grid_scores(colorizer, grey, true, l_small, probs, pull, log_p)
        row = {"paths": path, "psnr": p, "cf": c, "cf_orig": colourfulness(true),
               "psnr_grey": psnr(np.repeat(grey[..., None], 3, -1), true), "embedding": emb.astype(np.float16),
               "pred": pred.astype(np.float32), "net": (net / net.sum()).astype(np.float32)}
        for k, v in row.items():
            rows.setdefault(k, []).append(v)
        if len(rows["paths"]) % 200 == 0 or n == len(items) - 1:
            np.savez(out, **{k: np.stack(v) if k != "paths" else np.array(v) for k, v in rows.items()})
            print(f"{out}: {len(rows['paths'])}", flush=True)
    if rows:
        np.savez(out, **{k: np.stack(v) if k != "paths" else np.array(v) for k, v in rows.items()})


def score_main(args) -> int:
    colorizer = Colorizer.from_checkpoint(args.model)
    os.makedirs(args.out, exist_ok=True)
    i, n = args.shard
    if args.predictor:  # the evaluation sets, with the predictor fitted on all of the photos
        predictor = Predictor.load(args.predictor)
        for name, ps in evaluation_sets().items():
            score_set(colorizer, [(p, None) for p in ps[i::n]], predictor, os.path.join(args.out, f"{name}_{i}.npz"))
        return 0
    parts = [np.load(f) for f in args.features]
    paths = np.concatenate([p["paths"] for p in parts])
    raw, hists = np.concatenate([p["raw"] for p in parts]), np.concatenate([p["hists"] for p in parts])
    pred = oof_predictions(raw, hists, colorizer.bins)
    new = [k for k, p in enumerate(paths) if "/new/" in p]
    seen = [k for k, p in enumerate(paths) if "/new/" not in p]
    for name, idx in (("fit_new", spaced(new, args.new)), ("fit_seen", spaced(seen, args.seen))):
        score_set(colorizer, [(str(paths[k]), pred[k]) for k in idx[i::n]], None,
                  os.path.join(args.out, f"{name}_{i}.npz"))
    return 0


# ---- fit: the trust, learned on the fold-held-out photos ---------------------------------------------------

def load_rows(folder: str, name: str) -> dict:
    """A set's shards (name_I.npz) as one dict of arrays."""
    parts = [dict(np.load(f)) for f in sorted(glob.glob(os.path.join(folder, f"{name}_*.npz")))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def at(grid: np.ndarray, g: np.ndarray, c: np.ndarray | float) -> np.ndarray:
    """Each photo's value on the (PULLS x CORRECTIONS) grid (N, P, C) at its own pull g (N,) and correction c
    (N,) or scalar, interpolated linearly in both (clipped to the grid)."""
    rows = np.arange(len(grid))

    def cell(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.clip(np.broadcast_to(x, rows.shape), axis[0], axis[-1])
        i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
        return i, (x - axis[i]) / (axis[i + 1] - axis[i])

    (i, v), (j, u) = cell(PULLS, g), cell(CORRECTIONS, c)
    return ((1 - v) * (1 - u) * grid[rows, i, j] + v * (1 - u) * grid[rows, i + 1, j]
            + (1 - v) * u * grid[rows, i, j + 1] + v * u * grid[rows, i + 1, j + 1])


def trust_features(rows: dict, bins: np.ndarray) -> np.ndarray:
    """What a trust reads, per photo, all computable in the graph from the prediction h and the network's own
    colours n (its probabilities with no prior, averaged over the pixels): H(h), H(n), their total variation
    distance, their Bhattacharyya coefficient, and the mean chroma under each."""
    h, n = rows["pred"].astype(np.float64), rows["net"].astype(np.float64)
    chroma = np.linalg.norm(bins, axis=1)
    return np.stack([entropy(h), entropy(n), 0.5 * np.abs(h - n).sum(1), np.sqrt(h * n).sum(1),
                     h @ chroma, n @ chroma], 1)


FEATURE_NAMES = ("entropy_pred", "entropy_net", "tv_pred_net", "bc_pred_net", "chroma_pred", "chroma_net")


class Trust:
    """pull g = max_pull x sigmoid(w . (x - mean) / std + b), x the features (trust_features, optionally with
    the embedding's leading principal axes)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, max_pull: float = float(PULLS[-1])):
        self.mean, self.std, self.max_pull = mean, std, max_pull
        self.theta = np.zeros(len(mean) + 1)

    def pull(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std) @ self.theta[:-1] + self.theta[-1]
        return self.max_pull / (1 + np.exp(-z))

    def fit(self, x: np.ndarray, rows: dict, c: float, colour: float, l2: float) -> "Trust":
        """The weights that maximise the photos' mean PSNR plus `colour` dB per point of colourfulness (in points
        of the originals' mean) at correction c, minus l2 |w|^2."""
        cf_scale = 100 / rows["cf_orig"].mean()

        def loss(theta):
            self.theta = theta
            g = self.pull(x)
            return (-at(rows["psnr"], g, c).mean() - colour * cf_scale * at(rows["cf"], g, c).mean()
                    + l2 * (theta[:-1] ** 2).sum())
        starts = [np.r_[np.zeros(x.shape[1]), b0] for b0 in (-2.0, 0.0)]
        self.theta = min((minimize(loss, t0, method="Powell", options={"maxiter": 20000, "xtol": 1e-4,
                                                                          "ftol": 1e-7}) for t0 in starts),
                         key=lambda r: r.fun).x
        return self


def with_axes(x: np.ndarray, emb: np.ndarray, axes: np.ndarray | None, centre: np.ndarray | None) -> np.ndarray:
    return x if axes is None else np.concatenate([x, (emb - centre) @ axes.T], 1)


def report(rows: dict, trusts: dict) -> dict:
    """Per candidate: mean PSNR gain over v2's decode (grid 0, 0) and colourfulness in points of the originals."""
    base_p, base_c = rows["psnr"][:, 0, 0], rows["cf"][:, 0, 0]
    cf_orig = rows["cf_orig"].mean()
    out = {"photos": int(len(base_p)), "v2_vs_grey_db": float((base_p - rows["psnr_grey"]).mean()),
           "v2_cf_share": float(base_c.mean() / cf_orig)}
    for name, (g, cc) in trusts.items():
        out[name] = {"db": float((at(rows["psnr"], g, cc) - base_p).mean()),
                     "cf_points": float(100 * (at(rows["cf"], g, cc) - base_c).mean() / cf_orig),
                     "mean_pull": float(np.mean(g))}
    return out


def fit_main(args) -> int:
    colorizer = Colorizer.from_checkpoint(args.model)
    bins = colorizer.bins
    names = ("fit_new", "fit_seen", "val_general", "holdout_landscapes", "val_bsds", "kodak")
    sets = {n: load_rows(args.folder, n) for n in names}
    sets = {n: r for n, r in sets.items() if r}
    fit = {k: np.concatenate([sets[n][k] for n in args.fit_on]) for k in sets[args.fit_on[0]]}
    x_fit = trust_features(fit, bins)
    emb_fit = fit["embedding"].astype(np.float64)
    centre = emb_fit.mean(0)
    scale = emb_fit.std(0) + 1e-6
    _, _, vt = np.linalg.svd((emb_fit - centre) / scale, full_matrices=False)
    axes = {0: None, **{k: vt[:k] / scale for k in args.axes if k}}
    fold = np.random.default_rng(1).permutation(len(x_fit)) % FOLDS
    result = {"fit_on": list(args.fit_on), "photos": int(len(x_fit)), "features": list(FEATURE_NAMES),
              "pulls": PULLS.tolist(), "corrections": CORRECTIONS.tolist(), "candidates": {}}
    fitted = {}
    base_p, base_c, cf_scale = fit["psnr"][:, 0, 0], fit["cf"][:, 0, 0], 100 / fit["cf_orig"].mean()
    for k, ax in axes.items():
        x = with_axes(x_fit, emb_fit, ax, centre)
        for c in args.corrections:
            for colour in args.colour:
                # out-of-fold on the fit photos: each fold's pull from a trust fitted on the other folds
                g_oof = np.zeros(len(x))
                for f in range(FOLDS):
                    m = fold != f
                    tr = Trust(x[m].mean(0), x[m].std(0) + 1e-9).fit(x[m], {key: v[m] for key, v in fit.items()}, c,
                                                                     colour, args.l2)
                    g_oof[~m] = tr.pull(x[~m])
                trust = Trust(x.mean(0), x.std(0) + 1e-9).fit(x, fit, c, colour, args.l2)
                name = f"trust_axes{k}_c{c:g}_colour{colour:g}"
                fitted[name] = (trust, ax, c)
                cand = {"oof_db": float((at(fit["psnr"], g_oof, c) - base_p).mean()),
                        "oof_cf_points": float(cf_scale * (at(fit["cf"], g_oof, c) - base_c).mean()),
                        "theta": trust.theta.tolist(), "mean": trust.mean.tolist(), "std": trust.std.tolist()}
                result["candidates"][name] = cand
                print(f"{name}: out-of-fold {cand['oof_db']:+.3f} dB {cand['oof_cf_points']:+.1f} points", flush=True)
    # pre-registered: the most accurate out of fold among those at least as colourful as v2 on the fit photos
    ok = {n: c for n, c in result["candidates"].items() if c["oof_cf_points"] >= 0}
    result["chosen"] = max(ok, key=lambda n: ok[n]["oof_db"]) if ok else None
    print("chosen:", result["chosen"])
    result["sets"] = {}
    for n, rows in sets.items():
        x = trust_features(rows, bins)
        emb = rows["embedding"].astype(np.float64)
        (t, w), c_shipped = PREDICTOR_GATE, PREDICTOR_CORRECTION
        gate = 1 / (1 + np.exp(-(t - entropy(rows["pred"].astype(np.float64))) / w))
        cands = {f"fixed_g1_c{c_shipped:g}": (np.ones(len(x)), c_shipped),
                 "shipped_entropy_gate": (gate, c_shipped * gate)}  # the gate scales the whole bias
        for c in args.corrections:  # the best pull of the grid for each photo: what a trust could reach
            on_grid = np.stack([at(rows["psnr"], np.full(len(x), g), c) for g in PULLS], 1)
            cands[f"oracle_pull_c{c:g}"] = (PULLS[on_grid.argmax(1)], c)
        for name, (trust, ax, c) in fitted.items():
            cands[name] = (trust.pull(with_axes(x, emb, ax, centre)), c)
        result["sets"][n] = report(rows, cands)
        r = result["sets"][n]
        print(f"{n:<19} {r['photos']:>5} photos, v2 {r['v2_vs_grey_db']:+.2f} dB over grey at "
              f"{100 * r['v2_cf_share']:.1f}% colour", flush=True)
        for name in cands:
            if name.startswith(("fixed", "shipped", "oracle")) or name == result["chosen"] or args.verbose:
                print(f"    {name:<34} {r[name]['db']:+.3f} dB {r[name]['cf_points']:+.1f} points "
                      f"(mean pull {r[name]['mean_pull']:.2f})")
    save_json(args.out, "predicted_prior_trust", result)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("features", nargs="*", help="experiments.predictor_features files (the predictor's photos)")
    s.add_argument("--predictor", help="score the evaluation sets with this predictor instead")
    s.add_argument("--out", required=True)
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--shard", type=int, nargs=2, default=(0, 1), metavar=("I", "N"))
    s.add_argument("--new", type=int, default=5000, help="photos of the new collections scored (v2 never saw them)")
    s.add_argument("--seen", type=int, default=2500, help="photos of train/ scored (v2 trained on them)")
    f = sub.add_parser("fit")
    f.add_argument("folder", help="score's --out")
    f.add_argument("--model", default=DEFAULT_MODEL)
    f.add_argument("--fit-on", nargs="+", default=["fit_new", "fit_seen"])
    f.add_argument("--corrections", type=float, nargs="+", default=[0.1, 0.15, 0.2])
    f.add_argument("--colour", type=float, nargs="+", default=[0.0, 0.02, 0.05],
                   help="dB a point of colourfulness is worth in the trust's objective")
    f.add_argument("--verbose", action="store_true", help="every candidate on every set")
    f.add_argument("--axes", type=int, nargs="+", default=[0, 8], help="embedding principal axes added (0: none)")
    f.add_argument("--l2", type=float, default=1e-4)
    f.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    args = ap.parse_args(argv)
    return score_main(args) if args.cmd == "score" else fit_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
