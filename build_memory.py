"""Build a colour memory from your own colour photos, for predict_color.py --memory.

python build_memory.py FOLDER [FOLDER ...] -o family.npz [-model MODEL]
python predict_color.py -image old_photo.jpg --memory family.npz
python build_memory.py FOLDER [FOLDER ...] --predictor -o predictor.npz   (for export_model.py --predictor)

Each colour photo becomes one entry (memory.Bank): what the network sees in its grey version (an embedding)
and its colours (an ab histogram over the model's colour bins). When a grey photo is coloured with the
memory, its most similar entries lend their colours, as far as the trust (learned on photos held out from a
bank, experiments/memory_study.py; its weights ship in checkpoints/memory_trust.json) says they can be
trusted: strongly when the entries look like the photo and agree, hardly at all when not. A bank of photos of
the same family, place or film pays most (experiments/README.md, "Colour memory").

--predictor fits, from the same entries, a memory.Predictor instead: a ridge regression from the embedding to
the colours, for predict_color.py --memory or for export_model.py --predictor to put into a model's graph
(checkpoints/colour_predictor.npz is one, fitted on 16,000 photos; docs/priors.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

from colorizer import DEFAULT_MODEL, Colorizer
from colour_prior import photo_histogram
from files import CheckpointError
from image_io import InputError, open_image
from memory import DIMS, LAMBDA, Bank, Predictor, Trust
from predict_color import find_inputs

TRUST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "memory_trust.json")


def raw_embedding(colorizer: Colorizer, grey: np.ndarray) -> np.ndarray:
    """Grey (H, W) uint8 -> (2C,) float32: the deepest encoder features' mean and std over the image."""
    return colorizer.run(colorizer.network_input(grey), outputs=("embedding",))["embedding"][0]


def entry(colorizer: Colorizer, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A colour photo (H, W, 3) uint8 -> (raw embedding of its grey (2C,), its ab histogram (Q,))."""
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    return raw_embedding(colorizer, grey), photo_histogram(rgb, colorizer.bins).astype(np.float32)


def load_trust(path: str = TRUST) -> tuple[Trust, int, float]:
    """The shipped trust and the K and tau it was fitted with."""
    with open(path) as f:
        d = json.load(f)
    return Trust.from_arrays(d["trust"]), int(d["k"]), float(d["tau"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of colour photos (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="the bank file to write (.npz)")
    p.add_argument("-model", "--model", default=DEFAULT_MODEL, help="the model the bank is for (default: the shipped one)")
    p.add_argument("--dims", type=int, default=DIMS, help="embedding dimensions kept")
    p.add_argument("--predictor", action="store_true", help="fit a colour predictor (memory.Predictor) instead of "
                   "a bank")
    p.add_argument("--lam", type=float, default=LAMBDA, help="--predictor: its ridge penalty")
    args = p.parse_args(argv)
    try:
        colorizer = Colorizer.from_checkpoint(args.model)
        if colorizer.bins is None:
            raise CheckpointError(f"{args.model}: a memory needs a model with a classification head")
        missing = [f for f in args.folders if not os.path.isdir(f)]
        if missing:
            raise CheckpointError(f"{missing[0]}: folder not found")
        paths = [path for path, _ in find_inputs(args.folders)]  # the CLI's own search (skips Coloured_ results)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm
    raws, hists = [], []
    for path in tqdm(paths, desc="memory", unit="photo"):
        try:
            rgb = np.asarray(open_image(path).convert("RGB"))
        except InputError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        raw, hist = entry(colorizer, rgb)
        raws.append(raw)
        hists.append(hist)
    if len(raws) < 2:
        print(f"error: {', '.join(args.folders)}: a memory needs at least 2 readable colour photos", file=sys.stderr)
        return 2
    if args.predictor:
        Predictor.fit(np.stack(raws), np.stack(hists), colorizer.bins, args.lam).save(args.output)
    else:
        bank = Bank.build(np.stack(raws), np.stack(hists), colorizer.bins, args.dims)
        bank.trust, bank.k, bank.tau = load_trust()
        bank.save(args.output)
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {len(raws)} photos, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
