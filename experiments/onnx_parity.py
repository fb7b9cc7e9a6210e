"""How far the ONNX model's photos are from the torch checkpoint's: the largest difference of any output
pixel (8-bit RGB levels) over a folder, for the float16-stored export and a float32 one.

python experiments/onnx_parity.py [--data ../shared/data/bench/kodak] [--model checkpoints/colorizer.pt]

Writes a float32 export to a temporary folder for the comparison; prints one line per model and the sizes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from colorizer import Colorizer  # noqa: E402
from export_model import write_onnx  # noqa: E402
from image_io import grey_and_alpha  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(HERE, "..", "shared", "data", "bench", "kodak"))
    p.add_argument("--model", default=os.path.join(HERE, "checkpoints", "colorizer.pt"))
    args = p.parse_args(argv)
    paths = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith((".png", ".jpg")))
    greys = [grey_and_alpha(Image.open(f))[0] for f in paths]
    reference = Colorizer.from_checkpoint(args.model)
    want = [reference.colorize_grey(g).astype(np.int16) for g in greys]
    with tempfile.TemporaryDirectory() as tmp:
        for name, float16 in (("float16", True), ("float32", False)):
            path = os.path.join(tmp, f"{name}.onnx")
            write_onnx(args.model, path, float16)
            onnx = Colorizer.from_checkpoint(path)
            diffs = [np.abs(onnx.colorize_grey(g).astype(np.int16) - w) for g, w in zip(greys, want)]
            print(f"{name} weights: {os.path.getsize(path) / 1e6:.1f} MB; over {len(paths)} photos the largest "
                  f"difference is {max(int(d.max()) for d in diffs)} level(s), "
                  f"{100 * np.mean([float((d > 0).mean()) for d in diffs]):.4f}% of the channel values differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
