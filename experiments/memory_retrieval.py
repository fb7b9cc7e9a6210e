"""Which embedding finds photos alike in colour? Retrieval measured without decoding (issue 28).

python -m experiments.memory_retrieval --cache DIR [DIR ...] [--queries 1000]

For held-out query photos (seeded, never in the bank), the looked-up histogram (K neighbours, softmax(sim/tau))
is compared with the query's own true ab histogram (total variation distance, lower is better), for several
embeddings of the cached raw features (memory_features: mean and std of the deepest encoder features) and
bank settings, beside two baselines: the bank's mean histogram (no lookup) and the true nearest neighbour in
colour (an oracle, the floor).
"""
from __future__ import annotations

import argparse

import numpy as np

from experiments.memory_study import load_cache
from memory import Bank


def tv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(a - b).sum(-1)


def retrieved(bank: Bank, raw: np.ndarray) -> np.ndarray:
    sims = bank.embed(raw) @ bank.embeddings.astype(np.float32).T   # (n, N)
    idx = np.argpartition(-sims, bank.k, axis=1)[:, : bank.k]
    s = np.take_along_axis(sims, idx, 1)
    w = np.exp((s - s.max(1, keepdims=True)) / bank.tau)
    hs = bank.hists[idx].astype(np.float32)
    hs /= hs.sum(-1, keepdims=True)
    out = (w[..., None] * hs).sum(1)
    return out / out.sum(-1, keepdims=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", nargs="+", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args(argv)
    parts = [load_cache(c) for c in args.cache]
    raw = np.concatenate([p[0] for p in parts])
    hists = np.concatenate([p[1] for p in parts])
    n = len(raw)
    q = np.random.default_rng(0).choice(n, min(args.queries, n // 5), replace=False)
    bank_idx = np.setdiff1d(np.arange(n), q)
    bins = np.zeros((hists.shape[1], 2))
    c = raw.shape[1] // 2
    print(f"{len(bank_idx)} bank photos, {len(q)} queries; TV distance to the query's own histogram (lower is better)")
    print(f"  bank mean histogram (no lookup): {tv(hists[bank_idx].mean(0), hists[q]).mean():.3f}")
    d = tv(hists[q][:, None], hists[bank_idx][None])
    print(f"  oracle nearest in colour:        {d.min(1).mean():.3f}")
    variants = {"mean+std": slice(None), "mean": slice(0, c), "std": slice(c, None)}
    for name, cols in variants.items():
        for dims in (32, 64, 128):
            for k, tau in ((1, 1.0), (5, 0.05), (10, 0.05), (20, 0.05), (20, 1.0)):
                bank = Bank.build(raw[bank_idx][:, cols], hists[bank_idx], bins, dims=dims)
                bank.k, bank.tau = k, tau
                print(f"  {name:<9} dims {dims:>3} K {k:>2} tau {tau:<5g}: {tv(retrieved(bank, raw[q][:, cols]), hists[q]).mean():.3f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
