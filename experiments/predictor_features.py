"""The features a colour predictor could learn from, for every photo of a folder (issue 28): the graph's
embedding, the network's own colours (its probabilities averaged over the pixels, no prior) and the photo's
true ab histogram. For experiments/predictor_inputs.py.

python -m experiments.predictor_features FOLDER OUT.npz [--shard I N]   (N processes, one shard each)
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from colorizer import DEFAULT_MODEL, Colorizer
from colour_prior import photo_histogram
from predict_color import find_inputs


def network_colours(colorizer: Colorizer, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A grey photo -> the graph's embedding (E,) and the network's own colours (Q,): its probabilities with no
    prior, averaged over the pixels."""
    out = colorizer.run(colorizer.network_input(grey), bias=np.zeros(len(colorizer.bins), np.float32),
                        outputs=("embedding", "probs"))
    net = out["probs"][0].mean((1, 2))
    return out["embedding"][0], net / net.sum()


def joint_input(raw: np.ndarray, net: np.ndarray) -> np.ndarray:
    """The predictor input "embedding+network": the embedding beside the square roots of the network's colours."""
    return np.concatenate([raw, np.sqrt(net)], -1)


def features(colorizer: Colorizer, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (*network_colours(colorizer, np.asarray(Image.fromarray(rgb).convert("L"))),
            photo_histogram(rgb, colorizer.bins))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--shard", type=int, nargs=2, default=(0, 1), metavar=("I", "N"))
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.model)
    i, n = args.shard
    paths = [p for p, _ in find_inputs([args.folder])][i::n]
    rows = []
    for k, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                rows.append((p, *features(colorizer, np.asarray(im.convert("RGB")))))
        except OSError:
            continue
        if k % 1000 == 0:
            print(f"{k}/{len(paths)}", flush=True)
    np.savez(args.out, paths=np.array([r[0] for r in rows]), raw=np.stack([r[1] for r in rows]),
             net=np.stack([r[2] for r in rows]).astype(np.float32), hists=np.stack([r[3] for r in rows]).astype(np.float32))
    print(f"wrote {args.out}: {len(rows)} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
