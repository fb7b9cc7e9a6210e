"""A decoder that reads the predicted colour histogram (issue 28; Zhang et al. 2017's global hints, predicted
rather than given): does training beat adding the prior at decode time? A CPU pilot with its control.

python -m experiments.train_global_prior train --arm prior|control --out DIR [--features F.npz ...] [--steps 1000]
python -m experiments.train_global_prior eval DIR_PRIOR/net.pt DIR_CONTROL/net.pt --out RESULTS

Both arms start from v2 (checkpoints/colorizer.pt) with its encoder frozen, and fine-tune the decoder on the
colour predictor's 16,000 photos (experiments/predictor_features.py; 144 px, random 128-px crops at scale
0.6-1, flips; batch 16, AdamW 3e-4, 100 warm-up steps then cosine; v2's classification loss; seed 0; 1,000
steps, one pass over the photos).
"prior": a zero-initialised linear map of the square-rooted histogram is added to the bottleneck before the
global context, so the network starts exactly as v2; in training the histogram of each photo is the
out-of-fold prediction (experiments.predicted_prior_trust.oof_predictions: a ridge fitted without the photo),
in use it is predicted in the same pass from the frozen encoder's embedding by the shipped ridge
(checkpoints/colour_predictor.npz, fitted on the same 16,000 photos, none of them evaluated).
"control": the same fine-tune without the histogram, so that what the histogram adds is not mistaken for what
fine-tuning on these photos does (it moved v2 along its own curve: experiments/README "More photos").

eval: v2, the control and the prior arm, one network pass a photo, each at v2's temperature and the prior
corrections 0.35-0.65 (reweighted from one pass: softmax((z - c log w) / T)), on val/general, the held-out
landscapes, val/bsds and Kodak: PSNR gain over v2 and colourfulness as a share of the originals'.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

from colorizer import Colorizer
from dataset import decode_square, random_resized_crop_flip
from evaluate import colourfulness
from experiments.memory_study import save_json
from experiments.predicted_prior_study import evaluation_sets
from experiments.predicted_prior_trust import decode_scores, oof_predictions
from memory import Predictor
from model import GlobalContext, PriorHead, pooled_embedding
from runner_torch import model_from_checkpoint, training_prior
from train import Criterion, model_inputs
from utils import load_checkpoint

V2 = os.path.join("checkpoints", "colorizer.pt")
PREDICTOR = os.path.join("checkpoints", "colour_predictor.npz")
FEATURES = ["/work/predictor/features_0.npz", "/work/predictor/features_1.npz"]  # experiments/README: rebuild
CORRECTIONS = (0.35, 0.45, 0.55, 0.65)


class HistContext(nn.Module):
    """The bottleneck's global context, with the photo's colour histogram h added first:
    context(x + A sqrt(h)), A (C, Q) zero-initialised. h is `given` (training: out-of-fold) or, when None,
    predicted from x's pooled embedding by `predictor` (a PriorHead's ridge)."""

    def __init__(self, context: GlobalContext, channels: int, bins: int, predictor: PriorHead):
        super().__init__()
        self.context, self.predictor = context, predictor
        self.hist_in = nn.Linear(bins, channels)
        nn.init.zeros_(self.hist_in.weight)
        nn.init.zeros_(self.hist_in.bias)
        self.given: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.given if self.given is not None else self.predictor.predict(pooled_embedding(x))
        return self.context(x + self.hist_in(h.sqrt().to(x.dtype))[:, :, None, None])


def load_v2(histogram: bool) -> tuple[nn.Module, dict]:
    """v2's network and checkpoint; with `histogram`, its context a HistContext (the "prior" arm)."""
    ckpt = load_checkpoint(V2)
    model = model_from_checkpoint(ckpt, V2)
    if histogram:
        p = Predictor.load(PREDICTOR)
        head = PriorHead(*(torch.from_numpy(a) for a in (p.weights, p.offset, p.mean, p.std)),
                         torch.from_numpy(training_prior(model, ckpt)), p.strength)
        model.context = HistContext(model.context, model.context.mlp[0].in_features, model.cfg.num_bins, head)
    return model, ckpt


def train_main(args) -> int:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, ckpt = load_v2(args.arm == "prior")
    model.freeze_encoder()
    parts = [np.load(f) for f in args.features]
    paths = np.concatenate([p["paths"] for p in parts])
    pred = oof_predictions(np.concatenate([p["raw"] for p in parts]), np.concatenate([p["hists"] for p in parts]),
                           model.bins.numpy())
    images, hists = [], []
    for p, h in list(zip(paths, pred))[:args.photos or None]:
        im = decode_square((str(p), 144))
        if not isinstance(im, str):
            images.append(im)
            hists.append(h)
    images = torch.from_numpy(np.stack(images))  # (N, 144, 144, 3): what the crops take
    hists = torch.from_numpy(np.stack(hists)).float()
    print(f"{len(images)} photos cached", flush=True)
    crit = Criterion("classification", model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    norm = model.cfg.norm
    model.train()
    t0, losses = time.time(), []
    for step in range(args.steps):
        epoch, i = divmod(step * 16, len(images))
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))
        idx = order[i:i + 16]
        gen = torch.Generator().manual_seed(7_919 * step + 1)
        rgb = random_resized_crop_flip(images[idx], 128, 0.6, gen)
        l_n, ab_n = model_inputs(norm, rgb)
        if args.arm == "prior":
            model.context.given = hists[idx]
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = crit(model(l_n), ab_n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f} "
                  f"{(step + 1) * 16 / (time.time() - t0):.1f} img/s", flush=True)
    if args.arm == "prior":
        model.context.given = None
    os.makedirs(args.out, exist_ok=True)
    torch.save({"arm": args.arm, "model": {k: v.half() if v.is_floating_point() else v
                                          for k, v in model.state_dict().items()},
                "steps": args.steps, "losses": losses}, os.path.join(args.out, "net.pt"))
    print(f"wrote {args.out}/net.pt")
    return 0


def load_arm(path: str) -> nn.Module:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model, _ = load_v2(saved["arm"] == "prior")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["model"].items()})
    return model.eval()


def eval_main(args) -> int:
    torch.set_num_threads(args.threads)
    colorizer = Colorizer.from_checkpoint(V2)  # the steps around the network, and v2's decode
    t = colorizer.decode.temperature
    v2, _ = load_v2(False)
    models = {"v2": v2.eval(), **{os.path.basename(os.path.dirname(p)): load_arm(p) for p in args.nets}}
    log_w = v2.log_weights.double().numpy()
    result = {}
    for name, ps in evaluation_sets().items():
        ps = ps[:args.limit or None]
        rows = {m: {"psnr": [], "cf": []} for m in models}
        cf_orig = []
        for path in ps:
            with Image.open(path) as im:
                true = np.asarray(im.convert("RGB"))
            grey = np.asarray(Image.fromarray(true).convert("L"))
            l_small = colorizer.network_input(grey)
            l_n = torch.from_numpy((l_small.astype(np.float32) - np.float32(colorizer.l_center))
                                   / np.float32(colorizer.l_scale))
            cf_orig.append(colourfulness(true))
            for m, model in models.items():
                with torch.no_grad():
                    z = model(l_n)[0].double().numpy()  # (Q, h, w) logits
                scores = []
                for c in CORRECTIONS:
                    a = (z - c * log_w[:, None, None]) / t
                    scores.append(decode_scores(colorizer, grey, true, l_small, np.exp(a - a.max(0, keepdims=True))))
                rows[m]["psnr"].append([p for p, _ in scores])
                rows[m]["cf"].append([cf for _, cf in scores])
        base = np.array(rows["v2"]["psnr"])[:, CORRECTIONS.index(0.45)]
        result[name] = {m: {f"c{c:g}": {"db_vs_v2": float((np.array(r["psnr"])[:, k] - base).mean()),
                                        "cf_share": float(np.mean(np.array(r["cf"])[:, k]) / np.mean(cf_orig))}
                            for k, c in enumerate(CORRECTIONS)} for m, r in rows.items()}
        print(name, flush=True)
        for m, r in result[name].items():
            print(f"  {m:<8} " + "  ".join(f"{c}: {v['db_vs_v2']:+.3f} dB {100 * v['cf_share']:.1f}%"
                                          for c, v in r.items()), flush=True)
    save_json(args.out, "train_global_prior", result)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arm", choices=("prior", "control"), required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--features", nargs="+", default=FEATURES,
                   help="experiments.predictor_features files of the photos to train on (the predictor's)")
    t.add_argument("--photos", type=int, default=0, help="only the first N photos (0: all; N: a smoke test)")
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("eval")
    e.add_argument("nets", nargs="+")
    e.add_argument("--out", required=True)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--limit", type=int, default=0, help="only the first N photos of each set (0: all)")
    args = ap.parse_args(argv)
    return train_main(args) if args.cmd == "train" else eval_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
