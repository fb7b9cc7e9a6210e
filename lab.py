"""The colour maths of inference in numpy (no torch): grey levels -> Lab L, Lab -> sRGB, luma matching and
bilinear ab upsampling. utils.py holds the same maths in torch for training (on the GPU); tests hold the
two to each other and to scikit-image. Arrays are planar: (3, H, W) colours, (2, H, W) ab, (H, W) L.
"""
from __future__ import annotations

import functools

import numpy as np

# sRGB (linear) -> XYZ (scikit-image's matrix) and the D65 white, folded together as in utils.py.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZN = _RGB_TO_XYZ / _WHITE_D65[:, None]
_XYZN_TO_RGB = np.linalg.inv(_RGB_TO_XYZN).astype(np.float32)
_EPS = 0.008856  # (6/29)^3 as scikit-image writes it
_KAPPA = 7.787
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, PIL's convert("L")


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, np.maximum((c + 0.055) / 1.055, 0) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)


def grey_to_l(grey: np.ndarray) -> np.ndarray:
    """Grey levels in [0, 1] (any shape) -> Lab L in [0, 100] (in grey's float type)."""
    y = srgb_to_linear(grey)
    return np.where(y > _EPS, 116 * np.cbrt(np.maximum(y, _EPS)) - 16, 116 * _KAPPA * y).astype(grey.dtype)


@functools.lru_cache(maxsize=None)
def l_table(levels: int) -> np.ndarray:
    """L (float32, [0, 100]) of every grey level 0 .. levels - 1: a lookup replaces the sRGB/cube-root maths."""
    return grey_to_l(np.arange(levels, dtype=np.float64) / (levels - 1)).astype(np.float32)


# The grey level of white for the integer grey types; float greys are in [0, 1].
PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def levels_to_l(grey: np.ndarray) -> np.ndarray:
    """Grey (h, W) uint8, uint16 or float in [0, 1] -> L (h, W) float32 in [0, 100]."""
    if grey.dtype in PEAKS:
        return l_table(int(PEAKS[grey.dtype]) + 1)[grey]
    return grey_to_l(np.clip(np.asarray(grey, dtype=np.float32), 0, 1))


def levels(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey (h, W) -> (its values in [0, 1], float32; half a quantisation step: the tolerance of a grey
    made by rounding a luma to these levels)."""
    peak = PEAKS.get(grey.dtype)
    if peak is None:
        return np.clip(np.asarray(grey, dtype=np.float32), 0, 1), 0.0
    return grey.astype(np.float32) / np.float32(peak), 0.5 / peak


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (3, ...) in [0, 1] -> Lab (3, ...) float64 (a few colours: hints; training uses utils.rgb_to_lab)."""
    xyz = np.tensordot(_RGB_TO_XYZN, srgb_to_linear(np.asarray(rgb, dtype=np.float64)), 1)
    f = np.where(xyz > _EPS, np.cbrt(np.maximum(xyz, _EPS)), _KAPPA * xyz + 16 / 116)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def lab_to_rgb(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """L (H, W) and ab (2, H, W) -> sRGB (3, H, W) float32 in [0, 1] (out-of-gamut colours clipped)."""
    fy = (L + 16) / 116
    f = np.stack([fy + ab[0] / 500, fy, np.maximum(fy - ab[1] / 200, 0)]).astype(np.float32, copy=False)
    cube = f * f * f
    xyz = np.where(cube > _EPS, cube, (f - 16 / 116) / _KAPPA)
    rgb = np.tensordot(_XYZN_TO_RGB, xyz, 1)
    return np.clip(linear_to_srgb(rgb), 0, 1).astype(np.float32, copy=False)


def match_luma(rgb: np.ndarray, luma: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """The nearest colour (Euclidean in sRGB) to each pixel of rgb (3, H, W) in [0, 1] whose 601 luma is
    within tol of luma (H, W): the result converted to grey is the input. In place; utils.match_luma
    explains the three exact passes. A pixel none of whose channels met a bound is exact after the first
    pass, so the other two run only on the few pixels that still miss (saturated colours)."""
    flat, target = rgb.reshape(3, -1), luma.reshape(-1)
    missed = _luma_pass(flat, target, tol)
    for _ in range(2):
        idx = np.flatnonzero(missed)
        if not len(idx):
            break
        sub = flat[:, idx]
        missed = np.zeros(len(target), bool)
        missed[idx] = _luma_pass(sub, target[idx], tol)
        flat[:, idx] = sub
    return rgb


def _luma_pass(rgb: np.ndarray, luma: np.ndarray, tol: float) -> np.ndarray:
    """One pass of match_luma over rgb (3, N) in place; returns where a channel met a bound (N,)."""
    y = LUMA @ rgb
    excess = y - np.clip(y, luma - tol, luma + tol)
    free = np.where(excess > 0, rgb > 0, rgb < 1)
    step = excess / np.maximum((LUMA * LUMA) @ free, 1e-12)
    rgb -= step * LUMA[:, None] * free
    clipped = (rgb < 0) | (rgb > 1)
    np.clip(rgb, 0, 1, out=rgb)
    return clipped.any(0)


def _taps(n_out: int, n_in: int, start: int = 0, stop: int | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps (align_corners=False, edges repeated) of outputs start:stop of n_out samples over
    n_in: (lower index, upper index, weight of the upper), as torch's interpolate and grid_sample."""
    pos = (np.arange(start, n_out if stop is None else stop) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)


def upsample_cols(ab: np.ndarray, width: int) -> np.ndarray:
    """Bilinear upsampling (align_corners=False) of ab (C, h, w) along its rows to (C, h, width) float32:
    the first half of upsample_rows, done once per image when its rows are merged in strips."""
    lo, hi, wx = _taps(width, ab.shape[2])
    ab = np.asarray(ab, dtype=np.float32)
    return ab[:, :, lo] + (ab[:, :, hi] - ab[:, :, lo]) * wx


def blend_rows(wide: np.ndarray, y0: int, y1: int, height: int) -> np.ndarray:
    """The second half: rows y0:y1 of wide (C, h, W), upsampled bilinearly to `height` rows."""
    lo, hi, wy = _taps(height, wide.shape[1], y0, y1)
    return wide[:, lo] + (wide[:, hi] - wide[:, lo]) * wy[:, None]


def upsample_rows(ab: np.ndarray, y0: int, y1: int, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling (align_corners=False) of ab (C, h, w) to rows y0:y1 of a (height, width) image:
    (C, y1 - y0, width) float32, as torch's interpolate and grid_sample (padding_mode="border"). Also the
    resize to the network's size (rows 0:height)."""
    return blend_rows(upsample_cols(ab, width), y0, y1, height)
