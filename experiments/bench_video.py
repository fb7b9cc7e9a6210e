"""Temporal stability of film colorization, measured on a clip whose motion and colours are known.

python -m experiments.bench_video [--out experiments/results/video] [--set memory=0.85 ...]

The clip (640x480, 24 fps) is made from two Kodak photos: a slow pan with a slow zoom over the first,
then a cut to a pan over the second, so the true colour of every pixel is known and constant within
a shot. Its grey (601 luma, as PIL makes it) is encoded as H.264 (crf 18): the film a user has. That
film is colorized in one run per frame (as photos, --no-stabilize) and stabilised (the default), each
through the CLI's pipeline end to end (decode, colorize, encode), and measured on the frames before
encoding and on the mp4 a user gets:

- flicker: the mean change of ab (Euclidean, Lab units) between consecutive frames of a shot after
  undoing the known motion, both frames low-passed with a Gaussian of sigma 8 px so that codec noise
  does not count; pixels within 3 sigma of a frame's edge are left out;
- PSNR (8-bit RGB) of each frame against the original colour frame, averaged over frames;
- the colour leak across the cut: the low-passed ab difference, on the second shot, between the
  stabilised film and the second shot stabilised on its own (0 when the stabiliser restarts at the
  cut); for scale, the same for a stabiliser that ignores cuts, started 8 frames before it;
- speed: frames per second and CPU seconds per frame at 640x480, decode and encode included.

The reference is the original colour clip through H.264 at the same crf. Writes summary.json and
flicker.png into --out. --grain and --exposure-flicker age the grey film as old films are (Gaussian
grain of that many levels, and a random brightness gain of 1 +- that fraction per frame); the colours
are still measured against the clean originals.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from colorizer import DEFAULT_MODEL, Colorizer
from temporal import Stabilizer, StabilizerConfig
from utils import rgb_to_lab
from video import colorize_frames
from video_io import VideoInfo, VideoReader, read_frames, write_video

KODAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "bench", "kodak")
SIGMA = 8.0
# (photo, frames, zoom s from -> to, pan tx from -> to, ty from -> to): frame pixel (x, y) shows photo
# point (s x + tx, s y + ty), in continuous pixel coordinates.
SHOTS = [("kodim23.png", 72, (0.75, 0.68), (20.0, 250.0), (20.0, 40.0)),
         ("kodim03.png", 24, (0.70, 0.70), (240.0, 170.0), (30.0, 24.0))]


def transforms(frames: int, zoom, pan_x, pan_y) -> list[tuple[float, float, float]]:
    """(s, tx, ty) of each frame of a shot: linear in time from the first to the last."""
    t = np.linspace(0, 1, frames)
    return [(zoom[0] + (zoom[1] - zoom[0]) * u, pan_x[0] + (pan_x[1] - pan_x[0]) * u,
             pan_y[0] + (pan_y[1] - pan_y[0]) * u) for u in t]


def _grid(h: int, w: int, s: float, tx: float, ty: float, src_w: int, src_h: int) -> torch.Tensor:
    """grid_sample grid of a (h, w) frame whose pixel centres map to s p + t in a (src_h, src_w) image."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([(s * xs + tx) * 2 / src_w - 1, (s * ys + ty) * 2 / src_h - 1], -1)[None].float()


def render(photo: torch.Tensor, tf, size: tuple[int, int]) -> np.ndarray:
    """The frame (h, w, 3) uint8 that transform tf cuts from photo (1, 3, H, W) float in [0, 255]."""
    w, h = size
    out = F.grid_sample(photo, _grid(h, w, *tf, photo.shape[-1], photo.shape[-2]), mode="bicubic",
                        padding_mode="border", align_corners=False)
    return out[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def make_clip(size: tuple[int, int]) -> tuple[list[np.ndarray], list[tuple], list[int]]:
    """(colour frames, their transforms, shot index of each frame)."""
    frames, tfs, shot_of = [], [], []
    for i, (name, n, zoom, px, py) in enumerate(SHOTS):
        with Image.open(os.path.join(KODAK, name)) as im:
            photo = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32)).permute(2, 0, 1)[None]
        for tf in transforms(n, zoom, px, py):
            frames.append(render(photo, tf, size))
            tfs.append(tf)
            shot_of.append(i)
    return frames, tfs, shot_of


def lowpassed_ab(rgb: np.ndarray) -> np.ndarray:
    """RGB (h, w, 3) uint8 -> its ab (2, h, w) in Lab units, Gaussian low-passed (sigma SIGMA px)."""
    ab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].numpy()
    return np.stack([gaussian_filter(c, SIGMA, mode="nearest") for c in ab])


def motion_undone(prev: np.ndarray, tf_prev, tf_cur) -> tuple[np.ndarray, np.ndarray]:
    """prev (C, h, w) moved into the current frame's coordinates by the known motion, and the mask of
    pixels that come from inside prev, 3 sigma from both frames' edges."""
    _, h, w = prev.shape
    s0, x0, y0 = tf_prev
    s1, x1, y1 = tf_cur
    # current pixel p shows photo point s1 p + t1, which prev showed at (s1 p + t1 - t0) / s0
    grid = _grid(h, w, s1 / s0, (x1 - x0) / s0, (y1 - y0) / s0, w, h)
    moved = F.grid_sample(torch.from_numpy(prev)[None], grid, mode="bilinear", align_corners=False)[0].numpy()
    m = 3 * SIGMA
    px = (grid[0, ..., 0].numpy() + 1) * w / 2
    py = (grid[0, ..., 1].numpy() + 1) * h / 2
    inside = (px > m) & (px < w - m) & (py > m) & (py < h - m)
    inside[: int(m)], inside[-int(m):], inside[:, : int(m)], inside[:, -int(m):] = False, False, False, False
    return moved, inside


def flicker(frames: list[np.ndarray], tfs, shot_of) -> list[float]:
    """Flicker of each consecutive pair (NaN across a cut): mean |low-passed ab change| after the motion."""
    out, prev = [], None
    for i, rgb in enumerate(frames):
        ab = lowpassed_ab(rgb)
        if i:
            if shot_of[i] != shot_of[i - 1]:
                out.append(float("nan"))
            else:
                moved, inside = motion_undone(prev, tfs[i - 1], tfs[i])
                out.append(float(np.sqrt(((ab - moved) ** 2).sum(0))[inside].mean()))
        prev = ab
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def encode(frames: list[np.ndarray], path: str, info: VideoInfo, crf: int) -> None:
    write_video(path, info, lambda w: [w.write(f) for f in frames], crf=crf)


def colorize_film(colorizer: Colorizer, film: str, out: str, stabilize: bool, config: StabilizerConfig,
                  workers: int, greys: list) -> tuple[list[np.ndarray], dict]:
    """The CLI's pipeline (video.colorize_video) with the frames kept before encoding (and the decoded
    greys appended to greys); and timings."""
    stabilizer = Stabilizer(config) if stabilize else None
    kept, pts = [], []
    greys.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    with VideoReader(film) as reader:
        def decoded():
            for grey, p in reader.frames():
                greys.append(grey)
                pts.append(p)
                yield grey

        def fill(writer):
            for i, rgb in enumerate(colorize_frames(colorizer, decoded(), stabilizer, workers)):
                kept.append(rgb)
                writer.write(rgb, pts[i])
        write_video(out, reader.info, fill)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return kept, {"fps": len(kept) / wall, "cpu_s_per_frame": cpu / len(kept),
                  "cuts": stabilizer.cuts if stabilizer else None}


def summary(name: str, frames: list[np.ndarray], truth, tfs, shot_of) -> dict:
    f = flicker(frames, tfs, shot_of)
    p = [psnr(a, b) for a, b in zip(frames, truth)]
    return {"name": name, "flicker": float(np.nanmean(f)), "psnr": float(np.mean(p)),
            "flicker_per_pair": f, "psnr_per_frame": p}


def ab_distance(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    """Mean |low-passed ab difference| of each pair of frames."""
    return [float(np.sqrt(((lowpassed_ab(x) - lowpassed_ab(y)) ** 2).sum(0)).mean()) for x, y in zip(a, b)]


def leak(colorizer: Colorizer, greys: list[np.ndarray], stable: list[np.ndarray], cut: int,
         config: StabilizerConfig, workers: int) -> dict:
    """How far the stabilised second shot is from the second shot stabilised alone, and the same for a
    stabiliser blind to cuts, run from 8 frames before the cut."""
    alone = list(colorize_frames(colorizer, greys[cut:], Stabilizer(config), workers))
    blind_config = dataclasses.replace(config, cut_threshold=2.0, min_trust=0.0)
    blind = list(colorize_frames(colorizer, greys[cut - 8:], Stabilizer(blind_config), workers))[8:]
    return {"stable": ab_distance(stable[cut:], alone), "blind_to_cuts": ab_distance(blind, alone)}


def plot(results: dict, path: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    for key, style in [("per_frame_before", "C3-"), ("per_frame_mp4", "C3:"), ("stable_before", "C0-"),
                       ("stable_mp4", "C0:"), ("original_mp4", "k:")]:
        r = results[key]
        ax.plot(np.arange(1, len(r["flicker_per_pair"]) + 1), r["flicker_per_pair"], style,
                label=f"{key} ({r['flicker']:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("frame (a cut before frame %d)" % results["config"]["cut_at"]), ax.set_ylabel("flicker (mean |d ab|, sigma 8 px)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/results/video")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    p.add_argument("--crf", type=int, default=18)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--grain", type=float, default=0.0, help="film grain: Gaussian noise, in grey levels")
    p.add_argument("--exposure-flicker", type=float, default=0.0, help="random brightness gain 1 +- this, per frame")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="StabilizerConfig overrides")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the CLI: parallel strips on our threads
    config = StabilizerConfig(**{k: type(getattr(StabilizerConfig, k))(v)
                                 for k, v in (s.split("=", 1) for s in args.set)})
    truth, tfs, shot_of = make_clip(tuple(args.size))
    cut = shot_of.index(1)
    info = VideoInfo(*args.size, Fraction(24), Fraction(1, 24), len(truth))
    colorizer = Colorizer.from_checkpoint(args.model)
    results = {"config": {**vars(args), "stabilizer": dataclasses.asdict(config), "shots": SHOTS,
                          "sigma": SIGMA, "frames": len(truth), "cut_at": cut}}
    with tempfile.TemporaryDirectory() as tmp:
        film, ref = os.path.join(tmp, "film.mp4"), os.path.join(tmp, "original.mp4")
        greys = [np.asarray(Image.fromarray(f).convert("L")) for f in truth]
        rng = np.random.default_rng(0)
        greys = [np.clip(g * (1 + rng.uniform(-args.exposure_flicker, args.exposure_flicker))
                         + rng.normal(0, args.grain, g.shape), 0, 255).round().astype(np.uint8) if args.grain
                 or args.exposure_flicker else g for g in greys]
        encode([np.repeat(g[..., None], 3, 2) for g in greys], film, info, args.crf)
        encode(truth, ref, info, args.crf)
        results["original_before"] = summary("original", truth, truth, tfs, shot_of)
        results["original_mp4"] = summary("original, H.264", list(read_frames(ref)), truth, tfs, shot_of)
        results["grey"] = {"psnr": float(np.mean([psnr(np.repeat(g[..., None], 3, 2), t)
                                                  for g, t in zip(greys, truth)]))}
        kept, decoded = {}, []
        for name, stabilize in [("per_frame", False), ("stable", True)]:
            out = os.path.join(tmp, f"{name}.mp4")
            kept[name], speed = colorize_film(colorizer, film, out, stabilize, config, args.workers, decoded)
            results[f"{name}_before"] = {**summary(name, kept[name], truth, tfs, shot_of), **speed}
            results[f"{name}_mp4"] = summary(f"{name}, H.264", list(read_frames(out)), truth, tfs, shot_of)
            print(f"{name}: {speed['fps']:.2f} frames/s, {speed['cpu_s_per_frame']:.3f} CPU s/frame", file=sys.stderr)
    results["leak_after_cut"] = leak(colorizer, decoded, kept["stable"], cut, config, args.workers)
    pf_b, pf_m = results["per_frame_before"], results["per_frame_mp4"]
    st_b, st_m = results["stable_before"], results["stable_mp4"]
    results["bar"] = {"flicker_before_ratio": st_b["flicker"] / pf_b["flicker"],  # at most 1/3
                      "flicker_mp4_ratio": st_m["flicker"] / pf_m["flicker"],     # at most 1/2
                      "psnr_before_gain": st_b["psnr"] - pf_b["psnr"],            # >= 0
                      "psnr_mp4_gain": st_m["psnr"] - pf_m["psnr"],               # >= -0.2
                      "cut_detected": results["stable_before"]["cuts"] == [0, cut],
                      "leak": float(np.mean(results["leak_after_cut"]["stable"]))}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "flicker.png"))
    print(f"{'':24} {'flicker':>8} {'PSNR dB':>8}")
    for key in ("original_before", "original_mp4", "per_frame_before", "per_frame_mp4", "stable_before", "stable_mp4"):
        print(f"{key:24} {results[key]['flicker']:8.3f} {results[key]['psnr']:8.2f}")
    print(f"{'grey':24} {'':8} {results['grey']['psnr']:8.2f}")
    for key, d in results["leak_after_cut"].items():
        print(f"leak across the cut, {key}: mean {np.mean(d):.3f}, first frames", " ".join(f"{x:.2f}" for x in d[:4]))
    print(json.dumps(results["bar"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
