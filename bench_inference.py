"""Inference speed of the command line, end to end, for the torch and the ONNX path in the same run.

python bench_inference.py [--data ../shared/data/bench/kodak] [--model A B ...] [--repeats 3]

For each model (default: checkpoints/colorizer.pt on torch, then checkpoints/colorizer.onnx on
onnxruntime) it times `python predict_color.py` as a user runs it (imports, loading, decoding, saving):
- single: one photo, process start to file written;
- per_image: seconds per photo of a folder (768x512 Kodak photos), (folder run - single run) / (N - 1),
  so that the one-off start-up is not spread over the photos;
- per_frame: seconds per frame of a 640x480 film (made here from a pan over the first photo, with the
  stabiliser), (film run - single run) / (frames - 1);
- peak_mb: the largest resident memory of any of those processes.
Each figure is the median of --repeats runs, the models alternating so that load hits all alike; each is
also given as a ratio of the first model's. Prints, and writes as JSON with the machine described.
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

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FILM_SIZE, FILM_FRAMES = (640, 480), 48


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one command; exits naming it if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{err.strip()}")
    return dt, usage.ru_maxrss / 1024  # kB on Linux


def write_result(path: str, result: dict) -> None:
    """A benchmark's result as JSON, with the machine it ran on (CPU, cores, library versions, load) and the date."""
    import onnxruntime
    torch = sys.modules.get("torch")
    result = {**result, "machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
                                    "torch": torch and torch.__version__, "onnxruntime": onnxruntime.__version__,
                                    "python": platform.python_version(), "load_average": os.getloadavg()},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_film(photo: str, path: str) -> None:
    """A grey 640x480 film (H.264, 24 fps) panning 4 px a frame across photo."""
    import av
    w, h = FILM_SIZE
    with Image.open(photo) as im:
        grey = np.asarray(im.convert("L").resize((w + 4 * FILM_FRAMES, h)))
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(FILM_FRAMES):
            frame = np.ascontiguousarray(grey[:, 4 * t:4 * t + w])
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        c.mux(s.encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(HERE, "..", "shared", "data", "bench", "kodak"))
    p.add_argument("--model", nargs="+", default=[os.path.join(HERE, "checkpoints", "colorizer.pt"),
                                                  os.path.join(HERE, "checkpoints", "colorizer.onnx")],
                   help="models to time in the same run (the first is the reference of the ratios)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "bench", "results", "inference-cpu.json"))
    args = p.parse_args(argv)

    images = sorted(f for f in os.listdir(args.data) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if len(images) < 2:
        sys.exit(f"error: {args.data}: need at least 2 images")
    script = os.path.join(HERE, "predict_color.py")
    kinds = ("single", "folder", "film")
    runs = {m: {k: [] for k in kinds} for m in args.model}
    peak = {m: 0.0 for m in args.model}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.makedirs(src)
        for f in images:
            shutil.copy(os.path.join(args.data, f), src)
        one = os.path.join(src, images[0])
        film = os.path.join(tmp, "film.mp4")
        write_film(one, film)
        inputs = {"single": (one, os.path.join(tmp, "one.png")), "folder": (src, os.path.join(tmp, "out")),
                  "film": (film, os.path.join(tmp, "film_out.mp4"))}
        for m in args.model:  # warm-up: file caches, and a check that each model runs
            timed([sys.executable, script, "-image", one, "-model", m, "-output", os.path.join(tmp, "w.png")])
        for _ in range(args.repeats):
            for m in args.model:
                for kind in kinds:
                    dt, mb = timed([sys.executable, script, "-image", inputs[kind][0], "-model", m,
                                    "-output", inputs[kind][1], "--overwrite"])
                    runs[m][kind].append(dt)
                    peak[m] = max(peak[m], mb)
    models = []
    for m in args.model:
        med = {k: statistics.median(v) for k, v in runs[m].items()}
        models.append({"model": os.path.relpath(m, HERE), "single_image_s": med["single"], "folder_s": med["folder"],
                       "per_image_s": (med["folder"] - med["single"]) / (len(images) - 1), "film_s": med["film"],
                       "per_frame_s": (med["film"] - med["single"]) / (FILM_FRAMES - 1), "peak_mb": peak[m],
                       "runs": runs[m]})
    ref = models[0]
    for r in models:
        for k in ("single_image_s", "per_image_s", "per_frame_s", "peak_mb"):
            r[k.rsplit("_", 1)[0] + "_ratio"] = r[k] / ref[k]
        print(f"{r['model']}:\n  one photo, end to end:      {r['single_image_s']:.2f} s  ({r['single_image_ratio']:.2f}x)"
              f"\n  folder of {len(images)}, per photo:    {r['per_image_s']:.3f} s ({r['per_image_ratio']:.2f}x)"
              f"\n  640x480 film, per frame:    {r['per_frame_s']:.3f} s ({r['per_frame_ratio']:.2f}x)"
              f"\n  peak memory (any run):      {r['peak_mb']:.0f} MB ({r['peak_ratio']:.2f}x)")
    result = {**{k: ref[k] for k in ("single_image_s", "folder_s", "per_image_s", "model")},
              "images": len(images), "film": {"size": FILM_SIZE, "frames": FILM_FRAMES}, "models": models,
              "data": args.data}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
