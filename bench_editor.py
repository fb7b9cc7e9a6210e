"""The colour editor's speed: the time from a hint change to the new preview, at 768x512.

python bench_editor.py [--image ../shared/data/bench/kodak/kodim03.png] [--repeats 15] [--hints 1 10]

A server (editor_server) on 127.0.0.1 with the shipped model (ONNX; --model a .pt for torch); each timed request is what the page sends
after a click, a drag or a picked colour: POST /api/colorize with the whole list of hints (the last one
moved each time, so nothing is cached), until the PNG has arrived. Also printed: the one-off start (running
the network once: its colours and the distribution the suggestions come from), the first suggestion and later ones,
and the part of a preview spent in the hint propagation and merge (EditorSession.preview) rather than in
PNG encoding and HTTP. Each figure is the median of --repeats. The browser's decoding of the PNG (a few ms)
is not included. Writes the figures as JSON (--out) with the machine described.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time

import numpy as np
from PIL import Image

from bench_inference import write_result
from colorizer import DEFAULT_MODEL, Colorizer
from editor import EditorSession
from editor_server import EditorServer
from hints import Hint

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = (768, 512)


def photo(path: str) -> np.ndarray:
    """The benchmark photo as 8-bit grey at exactly 768x512."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize(SIZE, Image.Resampling.BICUBIC))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def hints_for(n: int, i: int) -> list[dict]:
    """n points spread over the photo; the last one moves with i (a drag)."""
    rng = np.random.default_rng(n)
    pts = [{"x": int(x), "y": int(y), "color": "#c0392b"} for x, y in zip(rng.integers(0, SIZE[0], n),
                                                                          rng.integers(0, SIZE[1], n))]
    pts[-1]["x"] = (pts[-1]["x"] + 7 * i) % SIZE[0]
    return pts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=os.path.join(HERE, "..", "shared", "data", "bench", "kodak", "kodim03.png"),
                   help="a photo (made grey, 768x512); default Kodak's kodim03, else the project's sample")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--hints", type=int, nargs="+", default=[1, 10], help="numbers of points to time with")
    p.add_argument("--out", default=os.path.join(HERE, "bench", "results", "editor-cpu.json"))
    args = p.parse_args(argv)
    image = args.image if os.path.exists(args.image) else os.path.join(HERE, "data", "sample_grey.jpg")
    workers = len(os.sched_getaffinity(0))
    colorizer = Colorizer.from_checkpoint(args.model)
    if colorizer.model is not None:  # torch: as predict_color.py runs it, its own worker threads, one per core
        import torch
        torch.set_num_threads(1)
    grey = photo(image)
    t0 = time.perf_counter()
    session = EditorSession(colorizer, grey, None, os.path.join(HERE, "bench", "tmp", "editor.png"), workers=workers)
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.suggest(100, 100)
    first_suggest_s = time.perf_counter() - t0
    server = EditorServer(session, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(hints: list[dict]) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/api/colorize", json.dumps({"hints": hints}), {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if r.status != 200:
            sys.exit(f"error: {r.status} {data[:200]!r}")
        return data

    def get(path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()

    result = {"image": os.path.relpath(image, HERE), "size": list(SIZE), "start_s": start_s,
              "first_suggest_s": first_suggest_s, "repeats": args.repeats, "per_hints": []}
    try:
        post(hints_for(1, 0))  # warm-up
        suggest = timed(lambda i: get(f"/api/suggest?x={(37 * i) % SIZE[0]}&y={(53 * i) % SIZE[1]}"), args.repeats)
        result["suggest_s"] = statistics.median(suggest)
        for n in args.hints:
            http_s = timed(lambda i: post(hints_for(n, i)), args.repeats)
            inner_s = timed(lambda i: session.preview([Hint(h["x"], h["y"], (192, 57, 43))
                                                       for h in hints_for(n, i)]), args.repeats)
            result["per_hints"].append({"hints": n, "click_to_preview_s": statistics.median(http_s),
                                        "propagate_and_merge_s": statistics.median(inner_s), "runs": http_s})
    finally:
        server.shutdown()
        server.server_close()

    print(f"colour editor, {SIZE[0]}x{SIZE[1]} ({result['image']}), median of {args.repeats}, "
          f"{workers} worker thread(s):")
    print(f"  start (network once):              {start_s:.2f} s")
    print(f"  first suggestion:                  {first_suggest_s:.2f} s; later ones {result['suggest_s'] * 1e3:.0f} ms")
    for r in result["per_hints"]:
        print(f"  hint change -> new preview, {r['hints']:>2} point(s): {r['click_to_preview_s'] * 1e3:.0f} ms "
              f"(propagation and merge {r['propagate_and_merge_s'] * 1e3:.0f} ms, the rest PNG and HTTP)")
    result["model"] = os.path.relpath(args.model, HERE)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
