"""Temporal stability for video: the predicted colour smoothed along the motion within a shot.

Colorizing each frame on its own flickers: the network's guess changes with film grain, codec noise and
small changes of framing. Stabilizer keeps a running colour (ab at the network's resolution) for the
shot. For each new frame it

1. detects a scene cut from the change of the grey histogram (each frame's grey normalised to zero mean
   and unit spread first, so that the exposure flicker of old films is not taken for a cut), and then
   starts afresh from the new prediction;
2. estimates the motion from the previous frame with a classical optical flow (scikit-image's iterative
   Lucas-Kanade, coarse to fine; no learned weights) on a small copy of the grey;
3. warps the running colour along it and trusts the warp per pixel by how well the warped previous grey
   matches the new one (low where things appear, disappear or the flow is wrong, zero outside the
   previous frame);
4. blends: running = w * warped + (1 - w) * prediction, with w = memory x trust. A warp that fails
   almost everywhere also counts as a cut.

Everything is at the network's resolution (e.g. 256x192 for a 4:3 film), so the cost is small next to
the network's; the colour is merged with each frame's full-resolution L afterwards, as for photos.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.registration import optical_flow_ilk


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


def flow_grid(flow: np.ndarray) -> torch.Tensor:
    """Flow (2, h, w) (rows, columns; where each pixel was in the previous frame, relative) ->
    grid_sample's (1, h, w, 2) grid (x, y in [-1, 1], align_corners=False)."""
    _, h, w = flow.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    x = (cols + flow[1] + 0.5) * 2 / w - 1
    y = (rows + flow[0] + 0.5) * 2 / h - 1
    return torch.from_numpy(np.stack([x, y], -1))[None]


def warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample image (1, C, h, w) at grid (1, h, w, 2): bilinear, edges repeated."""
    return F.grid_sample(image, grid.to(image.device), mode="bilinear", padding_mode="border", align_corners=False)


class Stabilizer:
    """Running colour of a shot: stabilizer(grey, ab) -> smoothed ab, one call per frame, in order.

    grey: the frame's grey (H, W), any size and dtype (it is resized here); ab: the network's prediction
    for it, (1, 2, h, w) in Lab units. The result has ab's shape, device and dtype. `cuts` lists the frame
    indices that started a new shot (the first frame included).
    """

    def __init__(self, config: StabilizerConfig | None = None):
        self.config = config or StabilizerConfig()
        self.state: torch.Tensor | None = None  # running ab (1, 2, h, w)
        self.prev: np.ndarray | None = None     # previous normalised grey at the flow's size
        self.index = -1
        self.cuts: list[int] = []
        self.last_trust: float = 0.0

    def flow_size(self, h: int, w: int) -> tuple[int, int]:
        s = min(1.0, self.config.flow_size / min(h, w))
        return max(8, round(w * s)), max(8, round(h * s))

    def __call__(self, grey: np.ndarray, ab: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        self.index += 1
        g = normalised_grey(resize(grey.astype(np.float32), self.flow_size(*ab.shape[-2:])))
        prev, self.prev = self.prev, g
        if prev is None or prev.shape != g.shape or histogram_change(prev, g, cfg.bins) > cfg.cut_threshold:
            return self._new_shot(ab)
        trust, grid = self._trust_and_grid(prev, g)
        self.last_trust = float(trust.mean())
        if self.last_trust < cfg.min_trust:
            return self._new_shot(ab)
        size = ab.shape[-2:]
        # The flow's grid in [-1, 1] coordinates does not depend on resolution: upsample it to ab's.
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
        w = cfg.memory * F.interpolate(trust[None, None], size=size, mode="bilinear", align_corners=False)
        warped = warp(self.state.float(), grid.permute(0, 2, 3, 1))
        self.state = (w.to(ab.device) * warped + (1 - w.to(ab.device)) * ab.float()).to(ab.dtype)
        return self.state

    def _new_shot(self, ab: torch.Tensor) -> torch.Tensor:
        self.cuts.append(self.index)
        self.state = ab.clone()
        self.last_trust = 0.0
        return self.state

    def _trust_and_grid(self, prev: np.ndarray, cur: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel trust (h, w) in [0, 1] of the warp from prev to cur, and its sampling grid."""
        cfg = self.config
        # optical_flow_ilk(reference, moving): moving sampled at (row + v, col + u) matches reference.
        flow = optical_flow_ilk(cur, prev, radius=cfg.flow_radius, num_warp=3)
        grid = flow_grid(flow)
        warped = warp(torch.from_numpy(prev)[None, None], grid)[0, 0]
        error = torch.from_numpy(cur) - warped
        # Average the error over a few pixels: single-pixel noise (grain) is not a failed warp.
        error = F.avg_pool2d(error.abs()[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
        trust = torch.exp(-(error / cfg.trust_scale) ** 2)
        inside = (grid.abs() <= 1).all(-1)[0]  # pixels whose source lies inside the previous frame
        return trust * inside, grid
