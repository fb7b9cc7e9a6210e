"""A uniform model soup (Wortsman et al. 2022): the weights of several runs of one network, fine-tuned from the
same pretrained encoder and the same decoder initialisation (seed), averaged into one network of the same
size and speed.

python -m experiments.archive.soup OUT.pt A/last.pt B/last.pt ...

OUT.pt keeps the first checkpoint's configs and counters (so export_model.py --run DIR --checkpoint OUT.pt
chooses its decode settings as for any run) and lists its ingredients under "soup_of".
"""
from __future__ import annotations

import os
import sys

import torch

from utils import load_checkpoint, save_checkpoint


def soup(paths: list[str]) -> dict:
    cks = [load_checkpoint(p) for p in paths]
    first = cks[0]
    for p, ck in zip(paths[1:], cks[1:]):
        if ck["model_config"] != first["model_config"] or ck["model"].keys() != first["model"].keys():
            raise SystemExit(f"{p}: not the same network as {paths[0]}")
    avg = {}
    for k, v in first["model"].items():
        if v.is_floating_point():
            avg[k] = (sum(ck["model"][k].double() for ck in cks) / len(cks)).to(v.dtype)
        else:
            avg[k] = v  # counters (BatchNorm's num_batches_tracked)
    out = {k: v for k, v in first.items() if k != "optimizer"}
    out["model"] = avg
    out["soup_of"] = [os.path.normpath(p) for p in paths]
    return out


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    save_checkpoint(soup(sys.argv[2:]), sys.argv[1])
    print(f"{sys.argv[1]}: the mean of {len(sys.argv) - 2} networks")
