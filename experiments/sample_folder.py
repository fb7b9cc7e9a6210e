"""A seeded sample of N photos of a folder, as a folder of symbolic links (the same sub-folders).

python -m experiments.sample_folder SRC N DST [--seed 0] [--exclude EARLIER_SAMPLE ...] [--exclude-list FILE]

Every photo below SRC is equally likely, so each sub-folder (a collection) keeps its share. --exclude leaves out
the photos an earlier sample linked (the same relative paths), so a next epoch shows the network photos it has not
seen. --exclude-list leaves out the photos a file names (paths relative to SRC, one a line, # comments), such as
the held-out landscapes of experiments/results/holdout/select.txt.
"""
import argparse
import os

import numpy as np

from image_io import INPUT_EXTENSIONS


def _photos(root: str) -> set:
    """The photos below root, as paths relative to it (links followed)."""
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root, followlinks=True)
            for f in files if f.lower().endswith(INPUT_EXTENSIONS)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("n", type=int)
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", nargs="*", default=[], help="earlier sample folders whose photos to leave out")
    p.add_argument("--exclude-list", help="a file of photos (relative to SRC) to leave out")
    args = p.parse_args(argv)
    seen = set().union(*(_photos(d) for d in args.exclude))
    if args.exclude_list:
        with open(args.exclude_list) as f:
            seen |= {line.strip() for line in f if line.strip() and not line.startswith("#")}
    paths = sorted(_photos(args.src) - seen)
    pick = np.random.default_rng(args.seed).choice(len(paths), min(args.n, len(paths)), replace=False)
    for i in sorted(pick):
        link = os.path.join(args.dst, paths[i])
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(args.src, paths[i])), link)
    print(f"{len(pick)} of {len(paths)} photos linked under {args.dst}"
          + (f" ({len(seen)} left out)" if seen else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
