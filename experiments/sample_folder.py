"""A seeded sample of N photos of a folder, as a folder of symbolic links (the same sub-folders).

python -m experiments.sample_folder SRC N DST [--seed 0]

Every photo below SRC is equally likely, so each sub-folder (a collection) keeps its share.
"""
import argparse
import os

import numpy as np

from image_io import INPUT_EXTENSIONS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("n", type=int)
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = sorted(os.path.relpath(os.path.join(d, f), args.src) for d, _, files in os.walk(args.src)
                   for f in files if f.lower().endswith(INPUT_EXTENSIONS))
    pick = np.random.default_rng(args.seed).choice(len(paths), min(args.n, len(paths)), replace=False)
    for i in sorted(pick):
        link = os.path.join(args.dst, paths[i])
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(args.src, paths[i])), link)
    print(f"{len(pick)} of {len(paths)} photos linked under {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
