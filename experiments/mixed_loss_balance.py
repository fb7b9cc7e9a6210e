"""The weight of a mixed loss's MSE term, set by gradient balance rather than by a search on val/.

    python -m experiments.mixed_loss_balance [--model checkpoints/colorizer.pt] [--images 64]

At the network a fine-tune starts from (the shipped classification model), on 128-px centre crops of
training photos (every n-th photo of ../shared/data/train/general, never val/), it prints the gradient norm,
over all weights, of the classification loss and of the MSE of its distribution's mean ab (train.py
--mse-weight's term at weight 1), and their ratio: the weight at which the two terms pull equally hard.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from dataset import center_crop, find_images, load_rgb, resize_short_side
from model import build_model
from train import Criterion, init_weights
from utils import load_checkpoint, rebalance_weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/colorizer.pt")
    p.add_argument("--data", default="../shared/data/train/general")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--lam", type=float, default=0.5, help="rebalancing lambda of the training recipe")
    a = p.parse_args()
    torch.manual_seed(0)
    ckpt = load_checkpoint(a.model)
    model = build_model(ckpt["model_config"])
    model.load_state_dict({k: v for k, v in init_weights(ckpt).items() if k != "log_weights"}, strict=False)
    prior = ckpt["ab_prior"]["prior"].float()
    model.log_weights.copy_(rebalance_weights(prior, a.lam).log())
    model.train()  # as in training: BatchNorm on batch statistics
    paths = find_images(a.data)
    paths = paths[:: max(1, len(paths) // a.images)][: a.images]
    rgb = center_crop(torch.stack([torch.from_numpy(np.array(resize_short_side(load_rgb(q), 144))[:144, :144])
                                   for q in paths]), 128)
    l_n, ab_n = model.cfg.norm.split(rgb)
    params = [q for q in model.parameters() if q.requires_grad]
    norms = {}
    for name, w_mse in (("classification", 0.0), ("mse of the mean", None)):
        out = model(l_n)
        if w_mse is None:  # the MSE term alone: the mixed loss at weight 1 minus the classification loss
            crit_ce, crit_mix = Criterion("classification", model), Criterion("classification", model, 1.0)
            loss = crit_mix(out, ab_n) - crit_ce(out, ab_n)
        else:
            loss = Criterion("classification", model)(out, ab_n)
        grads = torch.autograd.grad(loss, params)
        norms[name] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).item()
        print(f"{name}: loss {loss.item():.4f}, gradient norm {norms[name]:.4f}")
    print(f"equal pull at --mse-weight {norms['classification'] / norms['mse of the mean']:.1f}")


if __name__ == "__main__":
    main()
