"""Temporal stability for video: the predicted colour smoothed along the motion within a shot.

Colorizing each frame on its own flickers: the network's guess changes with film grain, codec noise and
small changes of framing. Stabilizer keeps a running colour (ab at the network's resolution) for the
shot. For each new frame it

1. detects a scene cut from the change of the grey histogram (each frame's grey normalised to zero mean
   and unit spread first, so that the exposure flicker of old films is not taken for a cut), and then
   starts afresh from the new prediction;
2. estimates the motion from the previous frame with a classical optical flow (iterative Lucas-Kanade,
   coarse to fine, as scikit-image's optical_flow_ilk; no learned weights) on a small copy of the grey;
3. warps the running colour along it and trusts the warp per pixel by how well the warped previous grey
   matches the new one (low where things appear, disappear or the flow is wrong, zero outside the
   previous frame);
4. blends: running = w * warped + (1 - w) * prediction, with w = memory x trust. A warp that fails
   almost everywhere also counts as a cut.

Everything is at the network's resolution (e.g. 256x192 for a 4:3 film), so the cost is small next to
the network's; the colour is merged with each frame's full-resolution L afterwards, as for photos.
All of it is numpy (films colorize without torch or scikit-image).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lab import upsample_rows


@dataclass
class StabilizerConfig:
    memory: float = 0.85        # weight of the warped running colour where the warp is trusted (0: per frame)
    cut_threshold: float = 0.15 # histogram change (total variation, 0..1) above which a frame starts a new shot
    min_trust: float = 0.4      # mean trust below which the warp failed: also a new shot
    flow_size: int = 96         # short side of the copy the optical flow runs on
    flow_radius: int = 4        # Lucas-Kanade window radius (pixels of the flow copy)
    trust_scale: float = 0.35   # warp error (in units of the frame's grey spread) at which trust is 1/e
    bins: int = 32              # histogram bins of the normalised grey


def normalised_grey(grey: np.ndarray) -> np.ndarray:
    """Grey (h, w) in any range -> float32 with zero mean and unit standard deviation (floor 0.02 of
    the range, so that a black frame does not blow up its noise)."""
    g = grey.astype(np.float32)
    return (g - g.mean()) / max(float(g.std()), 0.02 * max(float(g.max() - g.min()), 1e-6), 1e-6)


def histogram_change(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Total variation (0: same, 1: disjoint) between the histograms of two normalised greys, over
    -3..3 standard deviations (the tails counted in the end bins)."""
    ha = np.histogram(np.clip(a, -3, 3), bins=bins, range=(-3, 3))[0] / a.size
    hb = np.histogram(np.clip(b, -3, 3), bins=bins, range=(-3, 3))[0] / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


def resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float32 grey (h, w) -> (size[1], size[0]) by antialiased bilinear resampling (PIL)."""
    if grey.shape[::-1] == tuple(size):
        return grey
    return np.asarray(Image.fromarray(grey.astype(np.float32)).resize(size, Image.Resampling.BILINEAR,
                                                                       reducing_gap=3.0))


def box_mean(x: np.ndarray, radius: int, mode: str = "reflect") -> np.ndarray:
    """Mean over the (2r + 1)^2 window around each pixel of x (h, w). mode "reflect": the image mirrored
    at its edges (scipy's "mirror", as optical_flow_ilk's uniform filter); "valid": over the window's
    pixels inside the image only (avg_pool2d's count_include_pad=False)."""
    size = 2 * radius + 1

    def window_sums(a: np.ndarray) -> np.ndarray:
        c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
        c[1:, 1:] = a.cumsum(0).cumsum(1)
        return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    if mode == "reflect":
        return (window_sums(np.pad(x.astype(np.float64), radius, mode="reflect")) / size ** 2).astype(x.dtype)
    pad = np.pad(x.astype(np.float64), radius)
    count = window_sums(np.pad(np.ones(x.shape), radius))
    return (window_sums(pad) / count).astype(x.dtype)


def sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of image (h, w) or (C, h, w) at (rows, cols) (any shape; pixel units), positions
    outside clamped to the edge (grid_sample's padding_mode="border", map_coordinates' mode="nearest")."""
    h, w = image.shape[-2:]
    r, c = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    r0, c0 = np.floor(r).astype(np.intp), np.floor(c).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (r - r0).astype(np.float32), (c - c0).astype(np.float32)
    top = image[..., r0, c0] * (1 - fc) + image[..., r0, c1] * fc
    bottom = image[..., r1, c0] * (1 - fc) + image[..., r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _lucas_kanade(reference: np.ndarray, moving: np.ndarray, flow: np.ndarray, radius: int, num_warp: int
                  ) -> np.ndarray:
    """One pyramid level of optical_flow_ilk: num_warp times, warp `moving` by the flow, linearise, and
    solve each pixel's 2x2 least-squares system over its window."""
    rows, cols = np.meshgrid(np.arange(reference.shape[0], dtype=np.float32),
                             np.arange(reference.shape[1], dtype=np.float32), indexing="ij")
    for _ in range(num_warp):
        warped = sample(moving, rows + flow[0], cols + flow[1])
        gr, gc = np.gradient(warped)
        error = gr * flow[0] + gc * flow[1] + reference - warped
        a00, a01, a11 = (box_mean(g, radius) for g in (gr * gr, gr * gc, gc * gc))
        b0, b1 = box_mean(gr * error, radius), box_mean(gc * error, radius)
        det = a00 * a11 - a01 * a01
        ok = np.abs(det) >= 1e-14  # badly conditioned systems: no motion
        det = np.where(ok, det, 1)
        flow = np.stack([np.where(ok, (a11 * b0 - a01 * b1) / det, 0), np.where(ok, (a00 * b1 - a01 * b0) / det, 0)])
    return flow.astype(np.float32)


def _nearest_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The flow (2, h, w) at a finer shape: nearest-neighbour zoom (corners aligned), vectors scaled."""
    out = []
    for axis, (n_out, n_in) in enumerate(zip(shape, flow.shape[1:])):
        idx = np.rint(np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))).astype(np.intp)
        flow = np.take(flow, idx, axis=axis + 1)
        out.append(n_out / n_in)
    return flow * np.float32(out)[:, None, None]


def optical_flow(reference: np.ndarray, moving: np.ndarray, radius: int = 7, num_warp: int = 3,
                 min_size: int = 16) -> np.ndarray:
    """Iterative Lucas-Kanade optical flow, coarse to fine (scikit-image's optical_flow_ilk with a uniform
    window, in numpy): float greys (h, w) -> flow (2, h, w), (rows, columns), such that moving sampled at
    (row + flow[0], col + flow[1]) matches reference. The pyramid halves the size (antialiased) while the
    short side stays above 2 x min_size."""
    pyramid = [(reference.astype(np.float32), moving.astype(np.float32))]
    while min(pyramid[-1][0].shape) > 2 * min_size:
        h, w = pyramid[-1][0].shape
        size = ((w + 1) // 2, (h + 1) // 2)
        pyramid.append(tuple(np.asarray(Image.fromarray(g).resize(size, Image.Resampling.BILINEAR))
                             for g in pyramid[-1]))
    flow = np.zeros((2, *pyramid[-1][0].shape), np.float32)
    for ref, mov in reversed(pyramid):
        flow = _lucas_kanade(ref, mov, _nearest_flow(flow, ref.shape), radius, num_warp)
    return flow


class Stabilizer:
    """Running colour of a shot: stabilizer(grey, ab) -> smoothed ab, one call per frame, in order.

    grey: the frame's grey (H, W), any size and dtype (it is resized here); ab: the network's prediction
    for it, (1, 2, h, w) in Lab units (numpy, or anything np.asarray takes). The result is float32 numpy of
    ab's shape. `cuts` lists the frame indices that started a new shot (the first frame included).
    """

    def __init__(self, config: StabilizerConfig | None = None):
        self.config = config or StabilizerConfig()
        self.state: np.ndarray | None = None    # running ab (1, 2, h, w)
        self.prev: np.ndarray | None = None     # previous normalised grey at the flow's size
        self.index = -1
        self.cuts: list[int] = []
        self.last_trust: float = 0.0

    def flow_size(self, h: int, w: int) -> tuple[int, int]:
        s = min(1.0, self.config.flow_size / min(h, w))
        return max(8, round(w * s)), max(8, round(h * s))

    def __call__(self, grey: np.ndarray, ab: np.ndarray) -> np.ndarray:
        cfg = self.config
        ab = np.asarray(ab, dtype=np.float32)
        self.index += 1
        g = normalised_grey(resize(grey.astype(np.float32), self.flow_size(*ab.shape[-2:])))
        prev, self.prev = self.prev, g
        if prev is None or prev.shape != g.shape or histogram_change(prev, g, cfg.bins) > cfg.cut_threshold:
            return self._new_shot(ab)
        trust, flow = self._trust_and_flow(prev, g)
        self.last_trust = float(trust.mean())
        if self.last_trust < cfg.min_trust:
            return self._new_shot(ab)
        (h, w), (fh, fw) = ab.shape[-2:], g.shape
        # Where each pixel of ab was in the previous frame: the flow's source positions as shares of the
        # frame, which do not depend on resolution, upsampled to ab's size (bilinear, as the grid was).
        rows, cols = np.meshgrid(np.arange(fh, dtype=np.float32), np.arange(fw, dtype=np.float32), indexing="ij")
        share = np.stack([(rows + flow[0] + 0.5) / fh, (cols + flow[1] + 0.5) / fw])
        share = upsample_rows(share, 0, h, h, w)
        weight = cfg.memory * upsample_rows(trust[None], 0, h, h, w)[0]
        warped = sample(self.state[0], share[0] * h - 0.5, share[1] * w - 0.5)
        self.state = (weight * warped + (1 - weight) * ab[0])[None].astype(np.float32)
        return self.state

    def _new_shot(self, ab: np.ndarray) -> np.ndarray:
        self.cuts.append(self.index)
        self.state = ab.copy()
        self.last_trust = 0.0
        return self.state

    def _trust_and_flow(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel trust (h, w) in [0, 1] of the warp from prev to cur, and its flow (2, h, w)."""
        cfg = self.config
        # moving (prev) sampled at (row + flow[0], col + flow[1]) matches reference (cur).
        flow = optical_flow(cur, prev, radius=cfg.flow_radius, num_warp=3)
        h, w = cur.shape
        rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        src_r, src_c = rows + flow[0], cols + flow[1]
        error = cur - sample(prev, src_r, src_c)
        # Average the error over a few pixels: single-pixel noise (grain) is not a failed warp.
        error = box_mean(np.abs(error), 1, mode="valid")
        trust = np.exp(-(error / cfg.trust_scale) ** 2)
        # Pixels whose source lies inside the previous frame (within half a pixel of its edge pixels' centres).
        inside = (src_r >= -0.5) & (src_r <= h - 0.5) & (src_c >= -0.5) & (src_c <= w - 0.5)
        return (trust * inside).astype(np.float32), flow
