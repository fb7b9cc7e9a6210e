"""Colour priors for a classification head's decode: what colours to expect in this photo.

The head gives each pixel a distribution over Q ab bins, learned against one training-wide prior p (the
colours of all training photos). When something better is known about this photo's colours (a reference
photo's histogram h, or one looked up from a bank of colour photos, memory.py), the decode can trade p for h:
logits + s (log h - log p), s the strength (model.decode's `bias`; s = 0 is the automatic decode exactly).

Pure numpy, no torch: the ONNX path uses it too. Histograms are over the model's own bins (Q, 2) in Lab units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab import rgb_to_lab

SIGMA = 5.0         # Gaussian smoothing of a histogram in ab (Lab units); the grid step is 10
FLOOR = 0.05        # share of the training prior mixed into every histogram: no colour is made impossible
HIST_PIXELS = 2 ** 16  # photos are downscaled to about this many pixels before counting their colours
GRID_STEP, GRID_MAX = 10.0, 110.0
GRID_N = int(2 * GRID_MAX / GRID_STEP) + 1  # 23 cells a side, as utils.ab_grid_index


def rgb_to_ab(rgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB (..., 3) -> the a and b of CIE Lab (..., 2), float32 (lab.rgb_to_lab)."""
    lab = rgb_to_lab(np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0)
    return np.moveaxis(lab[1:], 0, -1).astype(np.float32)


class PriorError(ValueError):
    """A reference or memory that cannot be used (one line, for the front ends)."""


def _nearest_bin_of_cell(bins: np.ndarray) -> np.ndarray:
    """(GRID_N**2,) the index of the bin nearest to each cell centre of the full ab grid."""
    v = np.arange(GRID_N) * GRID_STEP - GRID_MAX
    cells = np.stack(np.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)
    return ((cells[:, None] - bins[None]) ** 2).sum(-1).argmin(1)


def smooth(hist: np.ndarray, bins: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """A histogram over bins (Q,) blurred by a Gaussian of `sigma` in ab, renormalised to sum 1."""
    d2 = ((bins[:, None] - bins[None]) ** 2).sum(-1)
    out = np.exp(-d2 / (2 * sigma ** 2)) @ hist
    return out / max(out.sum(), 1e-12)


def ab_histogram(ab: np.ndarray, bins: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """ab values (..., 2) in Lab units -> their smoothed distribution over bins (Q,), sums to 1. Each value
    counts for the nearest cell of the 10-unit grid, then for the bin nearest that cell."""
    ab = ab.reshape(-1, 2)
    q = np.round((np.clip(ab, -GRID_MAX, GRID_MAX) + GRID_MAX) / GRID_STEP).astype(np.int64)
    cell = q[:, 0] * GRID_N + q[:, 1]
    counts = np.bincount(_nearest_bin_of_cell(bins)[cell], minlength=len(bins)).astype(np.float64)
    return smooth(counts / max(counts.sum(), 1), bins, sigma)


def photo_histogram(rgb: np.ndarray, bins: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """8-bit RGB photo (H, W, 3) -> its smoothed ab histogram over bins (Q,), from at most ~HIST_PIXELS
    pixels (every k-th row and column: colour statistics need no more)."""
    k = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / HIST_PIXELS))))
    return ab_histogram(rgb_to_ab(rgb[::k, ::k]), bins, sigma)


def pool(hists: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Several histograms (Q,) -> their (weighted) mixture, sums to 1: several references pool their colours."""
    h = np.average(np.stack(hists), axis=0, weights=weights)
    return h / max(h.sum(), 1e-12)


def prior_bias(hist: np.ndarray, prior: np.ndarray, strength: float, floor: float = FLOOR) -> np.ndarray:
    """The decode's bias (Q,) float32: strength (log h - log p), h mixed with `floor` of p so that a colour
    the histogram lacks is made less likely, never impossible (at most by strength x log(1 / floor))."""
    prior = np.clip(prior.astype(np.float64), 1e-12, None)
    h = (1 - floor) * hist + floor * prior
    return (strength * (np.log(h) - np.log(prior))).astype(np.float32)


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two histograms over the same bins: 0 equal, 1 disjoint."""
    return float(0.5 * np.abs(p - q).sum())


# --reference: the strength and the extra centred colour gain chosen on val/general for the shipped model
# (experiments/reference_study.py; experiments/README.md "Colours from a reference photo").
REFERENCE_STRENGTH = 0.7
REFERENCE_GAIN = 1.4


@dataclass(frozen=True)
class ColourPrior:
    """What the decode takes for one photo: bias (Q,) added to the logits (model.decode's bias), and an extra
    centred gain on the decoded colours (1: none)."""
    bias: np.ndarray
    gain: float = 1.0


def reference_prior(hist: np.ndarray, prior: np.ndarray, strength: float = REFERENCE_STRENGTH) -> ColourPrior:
    """A reference's histogram -> the decode's prior. The gain grows with the strength up to REFERENCE_GAIN at
    the chosen strength, so that strength 0 is the automatic decode exactly."""
    gain = 1 + (REFERENCE_GAIN - 1) * min(strength / REFERENCE_STRENGTH, 1.0)
    return ColourPrior(prior_bias(hist, prior, strength), gain)


def centred_gain(ab: np.ndarray, gain: float) -> np.ndarray:
    """ab (..., 2, h, w) -> mu + gain (ab - mu), mu each image's mean colour (model.Decode's gain)."""
    if gain == 1.0:
        return ab
    mu = ab.mean((-2, -1), keepdims=True)
    return mu + gain * (ab - mu)
