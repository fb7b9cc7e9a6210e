"""Does a small network predict a photo's colours better than the ridge regression? (issue 28)

python -m experiments.predictor_mlp FEATURES.npz [FEATURES.npz ...] [--out DIR]

The same photos, inputs and held-out tenth as experiments/predictor_inputs.py (the embedding beside the square
roots of the network's own colours; ridge: total variation 0.375 from the truth). A one-hidden-layer MLP (GELU,
dropout, AdamW, one-cycle schedule, batch 256, seeded) maps the standardised inputs to logits over the bins,
trained with cross-entropy against the true histogram or with the Hellinger distance (the ridge's own loss),
optionally as a correction to the log of the network's colours. Prints and writes (predictor_mlp.json) the
held-out total variation of each configuration. Minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from torch import nn

from experiments.predictor_features import joint_input

CONFIGS = [  # hidden, dropout, weight decay, epochs, loss, residual on the network's colours
    (512, 0.3, 1e-2, 30, "cross_entropy", False), (512, 0.3, 1e-2, 30, "hellinger", False),
    (512, 0.3, 1e-2, 30, "cross_entropy", True), (512, 0.3, 1e-2, 30, "hellinger", True),
    (1024, 0.5, 1e-2, 60, "hellinger", False), (256, 0.2, 1e-2, 60, "hellinger", False)]


def held_out_tv(x: torch.Tensor, y: torch.Tensor, log_net: torch.Tensor, train: np.ndarray, held: np.ndarray,
                hidden: int, dropout: float, wd: float, epochs: int, loss: str, residual: bool) -> float:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Dropout(dropout),
                        nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=wd)
    tr = torch.as_tensor(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * (len(tr) // 256 + 1))
    logits = lambda b: net(x[b]) + (log_net[b] if residual else 0)  # noqa: E731
    for _ in range(epochs):
        net.train()
        perm = tr[torch.randperm(len(tr))]
        for i in range(0, len(perm), 256):
            b = perm[i:i + 256]
            z = logits(b)
            if loss == "cross_entropy":
                value = -(y[b] * torch.log_softmax(z, 1)).sum(1).mean()
            else:
                value = ((torch.softmax(z, 1).sqrt() - y[b].sqrt()) ** 2).sum(1).mean()
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        p = torch.softmax(logits(torch.as_tensor(held)), 1).numpy()
    return float(0.5 * np.abs(p - y[held].numpy()).sum(1).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features", nargs="+")
    ap.add_argument("--out", default=os.path.join("experiments", "results", "memory"))
    args = ap.parse_args(argv)
    parts = [np.load(f) for f in args.features]
    d = {k: np.concatenate([p[k] for p in parts]) for k in ("raw", "net", "hists")}
    n = len(d["raw"])
    held = np.random.default_rng(0).choice(n, n // 10, replace=False)  # predictor_inputs' split
    train = np.setdiff1d(np.arange(n), held)
    x = joint_input(d["raw"], d["net"]).astype(np.float64)
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    y = d["hists"] / d["hists"].sum(1, keepdims=True)
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    log_net = torch.log(torch.as_tensor(d["net"]).clamp_min(1e-6))
    rows = []
    for cfg in CONFIGS:
        tv = held_out_tv(x, y, log_net, train, held, *cfg)
        rows.append({"hidden": cfg[0], "dropout": cfg[1], "weight_decay": cfg[2], "epochs": cfg[3], "loss": cfg[4],
                     "residual_on_network": cfg[5], "tv": tv})
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "predictor_mlp.json"), "w") as f:
        json.dump({"photos": n, "held_out": len(held), "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
