"""Raw colour-memory features of many colour photos, cached in chunks (resumable): for memory.Bank.build.

python -m experiments.memory_features FOLDER [FOLDER ...] --cache DIR [--limit N] [--seed 0]

Each photo: its grey version through the shipped network at the colorizer's size -> its "embedding" output,
the deepest encoder feature map's per-channel mean and standard deviation (E = 640 for EfficientNet-Lite0;
the caches of 2026-12-06 were made from the torch encoder without the graph's padding), and the original's ab
histogram over the model's bins (colour_prior.photo_histogram). The photos of all folders are shuffled with
a seed, so a partial cache is a fair sample of them all. Chunks of 256 photos: DIR/chunk_00000.npz, ...
with the paths, so a rerun skips what is done.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
from PIL import Image

import colour_prior as cp
from build_memory import raw_embedding
from colorizer import DEFAULT_MODEL, Colorizer
from image_io import INPUT_EXTENSIONS as IMAGE_EXTENSIONS

CHUNK = 256


def list_photos(folders: list[str], seed: int) -> list[str]:
    paths = sorted(p for f in folders for p in glob.glob(os.path.join(f, "**", "*"), recursive=True)
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    np.random.default_rng(seed).shuffle(paths)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.model)
    bins = colorizer.bins
    paths = list_photos(args.folders, args.seed)[: args.limit or None]
    os.makedirs(args.cache, exist_ok=True)
    for c in range(0, len(paths), CHUNK):
        out = os.path.join(args.cache, f"chunk_{c // CHUNK:05d}.npz")
        if os.path.exists(out):
            continue
        raws, hists, kept = [], [], []
        for p in paths[c: c + CHUNK]:
            try:
                with Image.open(p) as im:
                    rgb = np.asarray(im.convert("RGB"))
            except OSError:
                continue
            raws.append(raw_embedding(colorizer, np.asarray(Image.fromarray(rgb).convert("L"))))
            hists.append(cp.photo_histogram(rgb, bins).astype(np.float32))
            kept.append(p)
        np.savez(out + ".tmp.npz", raw=np.stack(raws), hists=np.stack(hists), paths=np.array(kept))
        os.replace(out + ".tmp.npz", out)
        print(f"{min(c + CHUNK, len(paths))}/{len(paths)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
