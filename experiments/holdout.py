"""Keep landscapes back from training, to choose decode settings on beside val/general.

python experiments/holdout.py --data ../shared/data/train --per-folder landscape=150 scenes=150 \
    --list experiments/results/holdout/select.txt --link runs/holdout/select

val/general holds only people, objects and rooms, so a decode chosen on it alone never sees what the
landscapes of val/bsds and Kodak want (less stretch: the network is surer of them). This draws a seeded
sample of photos from sub-folders of the training folder, writes their paths (relative to --data, the
format of `train.py --exclude`) and, with --link, a folder of symbolic links to them that evaluate.py and
export_model.py read like any folder. Photos in nested folders (scenes/<class>/) are drawn evenly across
the nested folders.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataset import find_images  # noqa: E402


def draw(data: str, per_folder: dict[str, int], seed: int = 0) -> list[str]:
    """Paths relative to data: per_folder[name] photos from data/name, spread evenly over its
    immediate sub-folders (or all from it if it has none), chosen with one seeded generator."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name, n in per_folder.items():
        top = os.path.join(data, name)
        subs = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)) and not d.startswith("."))
        groups = [os.path.join(top, d) for d in subs] or [top]
        shares = [n // len(groups) + (i < n % len(groups)) for i in range(len(groups))]
        for group, k in zip(groups, shares):
            paths = find_images(group)
            if k > len(paths):
                raise ValueError(f"{group}: {len(paths)} photos, {k} asked for")
            chosen += [os.path.relpath(paths[i], data) for i in sorted(rng.choice(len(paths), k, replace=False))]
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/train")
    p.add_argument("--per-folder", nargs="+", default=["landscape=150", "scenes=150"], metavar="NAME=N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", required=True, help="write the chosen paths here (train.py --exclude reads it)")
    p.add_argument("--link", default="", help="also make this folder of symbolic links to the chosen photos")
    args = p.parse_args(argv)
    per_folder = {k: int(v) for k, v in (a.split("=") for a in args.per_folder)}
    chosen = draw(args.data, per_folder, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.list)), exist_ok=True)
    with open(args.list, "w") as f:
        f.write(f"# experiments/holdout.py --data {args.data} --per-folder {' '.join(args.per_folder)} "
                f"--seed {args.seed}\n")
        f.writelines(c + "\n" for c in chosen)
    if args.link:
        os.makedirs(args.link, exist_ok=True)
        for c in chosen:
            dst = os.path.join(args.link, c.replace(os.sep, "_"))
            if not os.path.lexists(dst):
                os.symlink(os.path.abspath(os.path.join(args.data, c)), dst)
    print(f"{len(chosen)} photos: {args.list}" + (f", linked in {args.link}" if args.link else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
