"""Turn a training run into a shipped model: pick decode settings on held-out images, store it compactly.

python export_model.py --run runs/shipped --out checkpoints/colorizer.pt [--members runs/shipped/last.pt --int8]
python export_model.py --onnx checkpoints/colorizer.pt   (only the ONNX export of a shipped checkpoint)
python export_model.py --onnx v2.pt --predictor predictor.npz --out new.pt   (v2 with a predicted colour prior)

The decode settings of a classification model (annealed-mean temperature T and prior correction c), and of
any model the centred colour gain, trade vividness for accuracy. They are chosen on the run's own held-out
training images (the first 150), or on all the photos of the --select folders: the most accurate setting
(PSNR gain over grey, the mean over the folders) among those whose colourfulness reaches --min-cf of the
originals' on every folder. The grid and its scores are written beside the checkpoint as JSON.

--members adds more checkpoints of the same network (a snapshot ensemble: the shipped model averages their
colours). Weights are stored in float16, or with --int8 as int8 with per-channel scales, and the settings are
chosen with the weights exactly as stored.

Beside the checkpoint goes its ONNX export (colorizer.onnx, opset 17, any input size): the network and its
decode in one graph (model.InferenceGraph), for runner_onnx.py, with float16 weights cast to float32 on
load, and in its metadata what colorizing needs without torch (docs/onnx.md).

--predictor puts a predicted colour prior (memory.Predictor, from build_memory.py --predictor) into a shipped
checkpoint: its graph then adds s (log h - log p) - c log p to the logits, h predicted from the photo's own
embedding in the same pass (model.PriorHead), unless the caller turns it off (--no-memory).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from dataset import find_images, split_holdout
from evaluate import evaluate
from memory import Predictor
from model import Decode, InferenceGraph, ModelConfig, build_model
from colorizer import Colorizer
from train import ab_prior_entry
from utils import float_weights, half_precision, int8_weights, load_checkpoint, save_checkpoint, write_atomic

ONNX_OPSET = 17


def held_out_paths(train_config: dict, limit: int) -> list[str]:
    """The run's validation images: --val if it had one, else the same held-out split train.py made."""
    if train_config.get("val"):
        paths = find_images(train_config["val"])
    else:
        _, paths = split_holdout(find_images(train_config["data"]), train_config["val_fraction"],
                                 train_config["seed"])
    return paths[:limit] if limit else paths


def reuse_outputs(model: torch.nn.Module) -> dict:
    """Make `model` keep its output for each input it sees and return it for an equal input again (same shape
    and bytes; hint inputs are not kept). A grid over decode settings feeds the network the same photos at the
    same size once per setting, and the decode knobs act only after the network, so each photo then runs
    once per size. For regression heads only: their 2 or 4 channels at half the input size are a few hundred
    kB a photo, where a classification head's 223 would not fit in memory for hundreds of photos.
    Returns the cache (for the tests)."""
    cache, forward = {}, model.forward_features  # forward() and the InferenceGraph both go through it

    def cached(l_norm: torch.Tensor, hints: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if hints is not None:
            return forward(l_norm, hints)
        key = (tuple(l_norm.shape), hashlib.sha1(l_norm.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in cache:
            cache[key] = forward(l_norm)
        return cache[key]

    model.forward_features = cached
    return cache


def score(colorizer: Colorizer, sets: dict[str, list[str]]) -> dict:
    """One setting's scores: PSNR gain over grey, colourfulness share, SSIM and AuC, as means over the
    selection sets (each set's own mean over its photos), and with several sets each set's under "per_set"."""
    per_set = []
    for name, paths in sets.items():
        m = evaluate(colorizer, paths, progress=False)["mean"]
        per_set.append({"set": name, "images": len(paths), "psnr_gain": m["psnr"] - m["grey_psnr"],
                        "cf_ratio": m["cf_ratio"], "ssim": m["ssim"], "auc": m["auc"]})
    keys = ("psnr_gain", "cf_ratio", "ssim", "auc")
    mean = {k: sum(s[k] for s in per_set) / len(per_set) for k in keys}
    return mean if len(per_set) == 1 else {**mean, "per_set": per_set}


def cf_shortfalls(result: dict, min_cf: float | Sequence[float]) -> list[float]:
    """How far a scored setting's colourfulness falls short of min_cf on each selection set (<= 0: reached).
    A setting scored on several sets lists them under "per_set"; min_cf is one share for all or one per set."""
    cfs = [s["cf_ratio"] for s in result["per_set"]] if "per_set" in result else [result["cf_ratio"]]
    mins = [min_cf] * len(cfs) if isinstance(min_cf, (int, float)) else list(min_cf)
    if len(mins) != len(cfs):
        raise ValueError(f"{len(mins)} colourfulness thresholds for {len(cfs)} selection sets")
    return [m - c for c, m in zip(cfs, mins)]


def choose(results: list[dict], min_cf: float | Sequence[float]) -> tuple[dict, bool]:
    """The selection rule over scored settings (dicts with "psnr_gain", the mean over the selection sets,
    and "cf_ratio", or "per_set" for several sets): the most accurate of those whose colourfulness reaches
    min_cf on every set, or, if none does, the one that falls least short on its worst set. Returns the
    pick and whether any setting reached min_cf everywhere."""
    ok = [r for r in results if max(cf_shortfalls(r, min_cf)) <= 0]
    pick = (max(ok, key=lambda r: r["psnr_gain"]) if ok
            else min(results, key=lambda r: max(cf_shortfalls(r, min_cf))))
    return pick, bool(ok)


class _Inputs(nn.Module):
    """InferenceGraph with the positional inputs the exported graph has (l, then bias and hints where the
    model has them)."""

    def __init__(self, graph: InferenceGraph, names: list[str]):
        super().__init__()
        self.graph, self.names = graph, names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = dict(zip(self.names, inputs))
        return self.graph(given["l"], given.get("bias"), given.get("hints"), given.get("memory"))


def float16_initializers(proto, min_size: int = 16) -> int:
    """Store the graph's float32 initializers of at least min_size values as float16, each read through a
    Cast back to float32 (the arithmetic stays float32); a tensor beyond float16's range stays float32.
    Returns the number converted. In place on an onnx ModelProto."""
    import onnx
    from onnx import helper, numpy_helper
    graph, casts, kept = proto.graph, [], []
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        with np.errstate(over="ignore"):  # a value beyond float16 stays float32 (below)
            half = value.astype(np.float16)
        if value.dtype != np.float32 or value.size < min_size or not np.isfinite(half).all():
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(half, init.name + "_fp16"))
        casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def export_onnx(runner, path: str, float16: bool = True) -> None:
    """Write runner's network and decode (a runner_torch.TorchRunner) as ONNX to path (atomically):
    inputs l (1, 1, h, w), bias (1, Q) for classification heads, hints (1, 3, h, w) for hint models, memory (1,)
    for a model with a predicted colour prior; outputs
    ab, embedding and (classification) probs (model.InferenceGraph); h and w free. metadata_props: JSON of
    model_config, decode, size, hint_propagation, bins and prior (what runner_onnx.OnnxRunner reads)."""
    import onnx
    classification = runner.bins is not None
    h, w = runner.size, round(runner.size * 1.5)
    names = ["l"] + ["bias"] * classification + ["hints"] * runner.takes_hints + ["memory"] * runner.predicts_prior
    example = {"l": torch.zeros(1, 1, h, w), "bias": torch.zeros(1, len(runner.bins) if classification else 0),
               "hints": torch.zeros(1, 3, h, w), "memory": torch.ones(1)}
    outputs = ["ab", "embedding"] + ["probs"] * classification
    free = {"l": {2: "h", 3: "w"}, "hints": {2: "h", 3: "w"}, "ab": {2: "h2", 3: "w2"}, "probs": {2: "h2", 3: "w2"}}
    buf = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(_Inputs(runner.graph.eval(), names), tuple(example[n] for n in names), buf,
                          opset_version=ONNX_OPSET, input_names=names, output_names=outputs,
                          # BatchNorm kept apart from its conv: the weights stored are then exactly the
                          # checkpoint's float16 values (onnxruntime fuses them on loading, in float32).
                          training=torch.onnx.TrainingMode.PRESERVE,
                          dynamic_axes={k: v for k, v in free.items() if k in names + outputs}, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    if float16:
        float16_initializers(proto)
    meta = {"model_config": runner.model_config, "decode": runner.decode.to_dict(), "size": runner.size,
            "hint_propagation": runner.propagation,
            "bins": None if runner.bins is None else runner.bins.tolist(),
            "prior": None if runner.prior is None else [float(p) for p in runner.prior]}
    if runner.predicts_prior:
        meta["colour_predictor"] = {"strength": runner.predictor.strength, "correction": runner.predictor.correction,
                                    "gate": runner.predictor.gate}
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(proto)
    write_atomic(path, lambda f: f.write(proto.SerializeToString()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="training run folder (uses best.pt)")
    p.add_argument("--onnx", metavar="CKPT", help="only export this shipped checkpoint to ONNX (beside it, .onnx)")
    p.add_argument("--predictor", metavar="NPZ", help="with --onnx: put this predicted colour prior (build_memory.py "
                   "--predictor) into the checkpoint, written to --out, then export that")
    p.add_argument("--predictor-strength", type=float, default=None, help="its pull s towards the predicted colours "
                   "(default: the predictor file's own, as build_memory.py wrote it)")
    p.add_argument("--predictor-correction", type=float, default=None, help="its push c towards rarer colours "
                   "(default: the file's)")
    p.add_argument("--predictor-gate", type=float, nargs=2, default=None, metavar=("T", "W"), help="trust the "
                   "prediction by sigmoid((T - its entropy) / W) (default: the file's)")
    p.add_argument("--float32", action="store_true", help="ONNX: store the weights as float32 (default float16)")
    p.add_argument("--checkpoint", default="best.pt", help="which checkpoint of the run")
    p.add_argument("--data", default="", help="the run's training folder, if it is elsewhere now (a packed copy "
                   "with the same file stems, experiments/pack_data.py, holds out the same images)")
    p.add_argument("--out", default="checkpoints/colorizer.pt")
    p.add_argument("--images", type=int, default=None, help="photos used to choose the settings (0: all; "
                   "default: every photo of --select, else the first 150 held-out images)")
    p.add_argument("--select", nargs="+", default=[], metavar="DIR", help="choose on these folders of colour photos "
                   "instead of the run's held-out images (e.g. general photos and landscapes kept back from "
                   "training); with several, the rule maximises the mean PSNR gain over them")
    p.add_argument("--min-cf", type=float, nargs="+", default=[0.75], help="required colourfulness, share of the "
                   "originals': one for every selection set, or one each")
    p.add_argument("--temperatures", default="0.3,0.38,0.45,0.55,0.7,1.0")
    p.add_argument("--corrections", default="0,0.25,0.5,0.75,1.0")
    p.add_argument("--gains", default="1", help="centred colour gains to try (any head; 1: as decoded)")
    p.add_argument("--spreads", default="0", help="regression_var heads: variance stretches to try (0: none)")
    p.add_argument("--evenness", default="0", help="per-photo evenness of the gain to try (any head; 0: none)")
    p.add_argument("--sizes", default="", help="network input sizes to try (default: the training resize)")
    p.add_argument("--members", nargs="+", default=[], metavar="CKPT",
                   help="more checkpoints of the same model config (e.g. the run's last.pt): the shipped model "
                   "averages the colours of all of them (a snapshot ensemble)")
    p.add_argument("--int8", action="store_true", help="store conv weights as int8 with per-channel scales "
                   "(a quarter of float32; the rest float16. Default: all float16)")
    args = p.parse_args(argv)
    if args.predictor:
        if not args.onnx or os.path.abspath(args.out) == os.path.abspath(args.onnx):
            p.error("--predictor goes with --onnx CKPT and an --out of its own")
        attach_predictor(args.onnx, args.predictor, args.predictor_strength, args.predictor_correction, args.out,
                         args.predictor_gate)
        return write_onnx(args.out, os.path.splitext(args.out)[0] + ".onnx", not args.float32)
    if args.onnx:
        return write_onnx(args.onnx, os.path.splitext(args.onnx)[0] + ".onnx", not args.float32)
    if not args.run:
        p.error("give --run (a training run to ship) or --onnx (a shipped checkpoint to export)")
    if len(args.min_cf) not in (1, max(1, len(args.select))):
        p.error(f"--min-cf: give one share, or one for each of the {len(args.select)} --select folders")
    min_cf = args.min_cf[0] if len(args.min_cf) == 1 else args.min_cf

    src = os.path.join(args.run, args.checkpoint)
    ckpt = load_checkpoint(src)
    members = [ckpt] + [load_checkpoint(m) for m in args.members]
    for path, m in zip(args.members, members[1:]):
        if m["model_config"] != ckpt["model_config"]:
            p.error(f"{path}: its model_config differs from {src}'s; ensemble members must share one")
    model = build_model(ModelConfig(**ckpt["model_config"]), len(members))
    nets = model.members if len(members) > 1 else [model]
    for net, m in zip(nets, members):
        net.load_state_dict(float_weights(m["model"]))
    if "ab_prior" in ckpt:
        nets[0].ab_prior = ckpt["ab_prior"]["prior"].float()
    # Choose the settings with the weights exactly as they will be stored.
    stored = (int8_weights if args.int8 else half_precision)(model.state_dict())
    model.load_state_dict(float_weights(stored))
    tc = ckpt["train_config"]
    if args.select:
        sets = {folder: find_images(folder)[:args.images or None] for folder in args.select}
    else:
        sets = {"held-out training images": held_out_paths({**tc, "data": args.data} if args.data else tc,
                                                           150 if args.images is None else args.images)}
    base_size = tc.get("resize") or round(tc["crop_size"] * 1.25)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [base_size]
    gains = [float(g) for g in args.gains.split(",")]
    spreads = [float(v) for v in args.spreads.split(",")] if model.cfg.head == "regression_var" else [0.0]
    if model.cfg.head == "classification":
        knobs = list(itertools.product(map(float, args.temperatures.split(",")),
                                       map(float, args.corrections.split(","))))
    else:
        knobs = [(1.0, 0.0)]  # T and c mean nothing to a regression head
    evenness = [float(a) for a in args.evenness.split(",")]
    grid = [(size, Decode(t, c, g, v, a)) for size in sizes for t, c in knobs for g in gains for v in spreads
            for a in evenness]

    if model.cfg.head != "classification":
        reuse_outputs(model)
    results = []
    for size, dec in grid:
        result = {"size": size, **dec.to_dict(), **score(Colorizer(model, size, dec), sets)}
        results.append(result)
        print(f"size {size} " + " ".join(f"{k} {v:.2f}" for k, v in dec.to_dict().items()) + ": "
              + "; ".join(f"PSNR gain {s['psnr_gain']:+.2f} dB, CF {100 * s['cf_ratio']:.0f}%, AuC {s['auc']:.1f}"
                          for s in result.get("per_set", [result])), flush=True)
    pick, ok = choose(results, min_cf)
    print(f"chosen: size {pick['size']}, " + ", ".join(f"{k} {pick[k]}" for k in Decode.keys())
          + ("" if ok else " (no setting reached the colourfulness asked for; took the one that fell least short)"))

    shipped = {"model": stored, "members": len(members),
               "model_config": ckpt["model_config"], "train_config": tc,
               "inference": {k: pick[k] for k in ("size", *Decode.keys())},
               "step": ckpt["step"], "epoch": ckpt["epoch"], "source": os.path.normpath(src),
               "member_sources": [os.path.normpath(src)] + [os.path.normpath(m) for m in args.members],
               "member_epochs": [m["epoch"] for m in members],
               **ab_prior_entry(nets[0], tc["rebalance_lambda"])}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_checkpoint(shipped, args.out)
    with open(os.path.splitext(args.out)[0] + "_selection.json", "w") as f:
        json.dump({"selection_images": sum(map(len, sets.values())), "selection_set": ", ".join(sets),
                   "min_cf": min_cf, "chosen": pick,
                   "grid": results}, f, indent=2)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    return write_onnx(args.out, os.path.splitext(args.out)[0] + ".onnx", not args.float32)


def attach_predictor(ckpt_path: str, predictor_path: str, strength: float | None, correction: float | None,
                     out: str, gate: Sequence[float] | None = None) -> None:
    """A shipped checkpoint with a predicted colour prior (memory.Predictor) in its colour_predictor entry; a
    setting left None is the predictor file's own."""
    ckpt = load_checkpoint(ckpt_path)
    predictor = Predictor.load(predictor_path)
    bins = ckpt.get("ab_prior", {}).get("bins")
    if bins is None or bins.shape != predictor.bins.shape or not np.allclose(bins.float().numpy(), predictor.bins):
        raise SystemExit(f"error: {predictor_path} was fitted for another model's colour bins "
                         f"(build_memory.py --predictor -model {ckpt_path})")
    strength = predictor.strength if strength is None else strength
    correction = predictor.correction if correction is None else correction
    gate = predictor.gate if gate is None else tuple(gate)
    ckpt["colour_predictor"] = {"weights": torch.from_numpy(predictor.weights).half(),
                                **{k: torch.from_numpy(getattr(predictor, k)) for k in ("offset", "mean", "std")},
                                "strength": float(strength), "correction": float(correction),
                                "gate": None if gate is None else [float(g) for g in gate]}
    save_checkpoint(ckpt, out)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB): predicted colour prior, s {strength:g}, "
          f"c {correction:g}, gate {gate}")


def write_onnx(ckpt: str, path: str, float16: bool = True) -> int:
    """export_onnx of a shipped checkpoint, with its own decode settings."""
    from runner_torch import TorchRunner
    export_onnx(TorchRunner.from_checkpoint(ckpt), path, float16)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
