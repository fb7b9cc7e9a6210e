"""Does the colour predictor gain from reading the network's own colours beside the embedding? (issue 28)

python -m experiments.predictor_inputs FEATURES.npz [FEATURES.npz ...] --out DIR

FEATURES: experiments.predictor_features shards (embedding, network colours, true histogram per photo). A seeded
tenth is held out; memory.Predictor is fitted on the rest from the embedding alone and from the embedding with
the square roots of the network's colours, for several ridge penalties; the held-out total variation distance to
the truth is printed, and both predictors at their best penalty, refitted on every photo, are written to DIR
(predictor_embedding.npz, predictor_embedding_network.npz) for experiments/predicted_prior_gate.py --inputs.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from colorizer import DEFAULT_MODEL, Colorizer
from experiments.predictor_features import joint_input
from memory import Predictor

LAMBDAS = (300.0, 1000.0, 3000.0, 10000.0)


def inputs(d: dict, kind: str) -> np.ndarray:
    return d["raw"] if kind == "embedding" else joint_input(d["raw"], d["net"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the model the features came from (its colour bins)")
    args = ap.parse_args(argv)
    parts = [np.load(f) for f in args.features]
    d = {k: np.concatenate([p[k] for p in parts]) for k in ("raw", "net", "hists")}
    bins = Colorizer.from_checkpoint(args.model).bins
    n = len(d["raw"])
    held = np.random.default_rng(0).choice(n, n // 10, replace=False)
    train = np.setdiff1d(np.arange(n), held)
    truth = d["hists"][held] / d["hists"][held].sum(1, keepdims=True)
    result = {"photos": n, "held_out": len(held), "network_alone_tv": float(
        0.5 * np.abs(d["net"][held] - truth).sum(1).mean()), "tv": {}}
    print(f"{n} photos, {len(held)} held out; the network's own colours: TV {result['network_alone_tv']:.3f}")
    os.makedirs(args.out, exist_ok=True)
    for kind in ("embedding", "embedding+network"):
        x = inputs(d, kind)
        tvs = {}
        for lam in LAMBDAS:
            pred = Predictor.fit(x[train], d["hists"][train], bins, lam).predict(x[held])
            tvs[lam] = float(0.5 * np.abs(pred - truth).sum(1).mean())
            print(f"  {kind:<18} lambda {lam:>7g}: TV {tvs[lam]:.4f}", flush=True)
        result["tv"][kind] = tvs
        best = min(tvs, key=tvs.get)
        Predictor.fit(x, d["hists"], bins, best).save(
            os.path.join(args.out, f"predictor_{kind.replace('+', '_')}.npz"))
    with open(os.path.join(args.out, "predictor_inputs.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
