"""Inference speed of the command line, end to end (imports, model loading, decoding, saving included).

python bench_inference.py [--data ../shared/data/bench/kodak] [--model CKPT ...] [--repeats 3]

Prints, and writes as JSON with the machine described:
- single: wall seconds of `python predict_color.py -image ONE_IMAGE` (target: at most 2.5 s);
- per_image: seconds per image when given a folder, (folder run - single run) / (N - 1), so that the
  one-off start-up cost is not spread over the images (target: at most 0.15 s for 768x512 images).
Each figure is the median of --repeats runs, alternating the two kinds (and the models, when several are
given) so that load hits all alike; with several models each is also given as a ratio of the first's times.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stderr.strip()}")
    return dt


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(HERE, "..", "shared", "data", "bench", "kodak"))
    p.add_argument("--model", nargs="+", default=[os.path.join(HERE, "checkpoints", "colorizer.pt")],
                   help="checkpoints to time in the same run (the first is the reference of the ratios)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "bench", "results", "inference-cpu.json"))
    args = p.parse_args(argv)

    images = sorted(f for f in os.listdir(args.data) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if len(images) < 2:
        sys.exit(f"error: {args.data}: need at least 2 images")
    script = os.path.join(HERE, "predict_color.py")
    single = {m: [] for m in args.model}
    folder = {m: [] for m in args.model}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.makedirs(src)
        for f in images:
            shutil.copy(os.path.join(args.data, f), src)
        one = os.path.join(src, images[0])
        for m in args.model:  # warm-up: file caches, and a check that each model runs
            timed([sys.executable, script, "-image", one, "-model", m, "-output", os.path.join(tmp, "w.png")])
        for _ in range(args.repeats):
            for m in args.model:
                single[m].append(timed([sys.executable, script, "-image", one, "-model", m,
                                        "-output", os.path.join(tmp, "one.png")]))
                folder[m].append(timed([sys.executable, script, "-image", src, "-model", m,
                                        "-output", os.path.join(tmp, "out")]))
    import torch
    models = []
    for m in args.model:
        t_single, t_folder = statistics.median(single[m]), statistics.median(folder[m])
        models.append({"model": os.path.relpath(m, HERE), "single_image_s": t_single, "folder_s": t_folder,
                       "per_image_s": (t_folder - t_single) / (len(images) - 1),
                       "runs_single": single[m], "runs_folder": folder[m]})
    ref = models[0]
    for r in models:
        r["single_ratio"] = r["single_image_s"] / ref["single_image_s"]
        r["per_image_ratio"] = r["per_image_s"] / ref["per_image_s"]
        print(f"{r['model']}:\n  one image, end to end:   {r['single_image_s']:.2f} s   (target <= 2.5 s)"
              + (f", {r['single_ratio']:.2f}x the first model's" if len(models) > 1 else ""))
        print(f"  folder of {len(images)}, per image: {r['per_image_s']:.3f} s (target <= 0.15 s; whole run "
              f"{r['folder_s']:.2f} s)" + (f", {r['per_image_ratio']:.2f}x" if len(models) > 1 else ""))
    result = {**{k: ref[k] for k in ("single_image_s", "folder_s", "per_image_s", "runs_single",
                                     "runs_folder", "model")},
              "images": len(images), "models": models,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version(), "load_average": os.getloadavg()},
              "data": args.data, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
