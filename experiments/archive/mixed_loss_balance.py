"""The weight of a mixed loss's MSE term, set by gradient balance rather than by a search on val/.

    python -m experiments.archive.mixed_loss_balance [--model checkpoints/colorizer.pt] [--images 64]

At the network a fine-tune starts from (the shipped classification model), on 128-px centre crops of
training photos (every n-th photo of ../shared/data/train/general, never val/), it prints the gradient norm,
over all weights, of the classification loss and of the MSE of its distribution's mean ab (train.py
--mse-weight's term at weight 1), and their ratio: the weight at which the two terms pull equally hard.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from dataset import center_crop, decode_square, find_images
from train import Criterion, TrainConfig, load_init, new_model
from utils import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/colorizer.pt")
    p.add_argument("--data", default="../shared/data/train/general")
    p.add_argument("--images", type=int, default=64)
    a = p.parse_args()
    torch.manual_seed(0)
    ckpt = load_checkpoint(a.model)
    # The network as train.py --init builds it from this checkpoint (its bins, prior and rebalancing).
    model = new_model(TrainConfig(**ckpt["train_config"]), None, pretrained=False, init=ckpt)
    load_init(model, ckpt, a.model)
    model.train()  # as in training: BatchNorm on batch statistics
    paths = find_images(a.data)
    paths = paths[:: max(1, len(paths) // a.images)][: a.images]
    rgb = center_crop(torch.from_numpy(np.stack([decode_square((q, 144)) for q in paths])), 128)
    l_n, ab_n = model.cfg.norm.split(rgb)
    out = model(l_n)
    classification = Criterion("classification", model)(out, ab_n)
    terms = {"classification": classification,  # the MSE term: the mixed loss at weight 1 less the above
             "mse of the mean": Criterion("classification", model, 1.0)(out, ab_n) - classification}
    params = [q for q in model.parameters() if q.requires_grad]
    norms = {}
    for name, loss in terms.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        norms[name] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).item()
        print(f"{name}: loss {loss.item():.4f}, gradient norm {norms[name]:.4f}")
    print(f"equal pull at --mse-weight {norms['classification'] / norms['mse of the mean']:.1f}")


if __name__ == "__main__":
    main()
